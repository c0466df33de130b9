// Builds the page's script into the file named by the first argument: the committed bundle
// (`npm run build`), or a temporary file that tests/demo_page.rs compares with it. The output
// depends only on the sources and the pinned esbuild: no timestamps, no absolute paths.
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const out = process.argv[2];
if (!out) {
    console.error("usage: node build.mjs <output file>");
    process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
await esbuild.build({
    absWorkingDir: here,
    entryPoints: ["src/main.js"],
    outfile: path.resolve(process.cwd(), out),
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "es2020",
    minify: true,
    legalComments: "eof",
    banner: { js: "// ringsfu test-call page: built from demo/ by `npm run build`; do not edit." },
    logLevel: "warning",
});

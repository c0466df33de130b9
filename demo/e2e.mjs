// Two headless Chromium pages on the test-call page, each with its own fake camera: waits until
// each shows the other's tile with decoded frames and a selected ICE path, reads the tiles twice
// two seconds apart, and screenshots both pages. Driven by tests/demo_browser.rs:
//
//   node e2e.mjs '<json config>'
//
// config: { pageUrl, chromium, playwright (path of playwright-core's index.mjs), screenshotDir,
//           timeoutMs }
// Prints one line `RESULT <json>`; the Rust test judges it.
import path from "node:path";
import { pathToFileURL } from "node:url";
import { CHROMIUM_ARGS } from "../tests/browser/chromium-args.mjs";

const config = JSON.parse(process.argv[2]);
const started = Date.now();
const log = (...args) => console.error(`[demo-e2e +${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args);
// Never outlive the test: a hung browser still ends the run.
setTimeout(() => {
    log("watchdog: giving up");
    process.exit(3);
}, config.timeoutMs + 30000).unref();

const { chromium } = await import(pathToFileURL(config.playwright).href);

/** What the page shows: the tiles, and for the first remote one its video and readings. */
function reading() {
    const field = (tile, name) => tile.querySelector(`[data-field="${name}"]`);
    const tiles = [...document.querySelectorAll(".tile")].map((tile) => ({
        tile: tile.dataset.tile,
        transport: field(tile, "transport").textContent,
        path: field(tile, "path").textContent,
        protocol: field(tile, "path").dataset.protocol || "",
        bitrate: field(tile, "bitrate").textContent,
        layer: field(tile, "layer").textContent,
    }));
    const remote = document.querySelector('.tile:not([data-tile="self"]) video');
    return {
        status: document.getElementById("status").textContent,
        tiles,
        remoteFrames: remote ? remote.getVideoPlaybackQuality().totalVideoFrames : 0,
        remoteWidth: remote ? remote.videoWidth : 0,
    };
}

const shows = (r) => r.remoteFrames > 0 && r.tiles.some((t) => t.tile !== "self" && t.protocol && t.bitrate.startsWith("in "));

const result = { ok: false, pages: [] };
let browser;
try {
    browser = await chromium.launch({
        executablePath: config.chromium,
        headless: true,
        args: CHROMIUM_ARGS,
    });
    const pages = [];
    for (let i = 0; i < 2; i++) {
        // One context each: separate fake devices and storage, as two tabs of two people.
        const page = await (await browser.newContext({ viewport: { width: 1280, height: 720 } })).newPage();
        page.on("console", (m) => ["error", "warning"].includes(m.type()) && log(`page ${i + 1}:`, m.text()));
        page.on("pageerror", (e) => log(`page ${i + 1} exception:`, e.message));
        await page.goto(config.pageUrl);
        pages.push(page);
    }
    const readAll = () => Promise.all(pages.map((page) => page.evaluate(reading)));
    let current = await readAll();
    while (!current.every(shows) && Date.now() - started < config.timeoutMs) {
        await new Promise((r) => setTimeout(r, 500));
        current = await readAll();
    }
    const before = current;
    await new Promise((r) => setTimeout(r, 2000));
    const after = await readAll();
    for (let i = 0; i < pages.length; i++) {
        const screenshot = path.join(config.screenshotDir, `page-${i + 1}.png`);
        await pages[i].screenshot({ path: screenshot });
        result.pages.push({ before: before[i], after: after[i], screenshot });
    }
    result.ok = before.every(shows);
    log(result.ok ? "both pages show each other" : "timed out waiting for the pages to show each other");
} catch (e) {
    result.error = String(e && e.stack ? e.stack : e);
} finally {
    console.log(`RESULT ${JSON.stringify(result)}`);
    if (browser) await browser.close().catch(() => {});
}
process.exit(0);

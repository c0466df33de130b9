// Runs headless Chromium participants (client.js on mediasoup-client) against a ringsfu server
// and checks what they receive. Driven by the Rust tests tests/browser_e2e.rs and
// tests/browser_network.rs:
//
//   node e2e.mjs '<json config>'
//
// config: { scenario: "call" | "simulcast", participants: [{url, channelUUID, jwt, publish,
//           iceServers?, iceTransportPolicy?}], timeoutMs, chromium? }
// Each participant's report names the ICE path its transports selected (send.pair, recv.pair).
// Prints one line `RESULT <json>` and exits 0 when the scenario's expectations held.
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";
import { CHROMIUM_ARGS } from "./chromium-args.mjs";

function consumerOf(report, sessionId, kind) {
    return report.consumers.find((c) => c.sessionId === sessionId && c.kind === kind && !c.closed);
}

const scenarios = {
    // Everyone hears and sees everyone: audio bytes and decoded video frames rise for each pair.
    call(config, before, after) {
        const ids = config.participants.map((p) => p.sessionId);
        for (let i = 0; i < ids.length; i++) {
            for (const other of ids) {
                if (other === ids[i]) continue;
                for (const kind of ["audio", "video"]) {
                    const a = consumerOf(before[i], other, kind);
                    const b = consumerOf(after[i], other, kind);
                    if (!a || !b) return { ok: false, reason: `participant ${ids[i]} has no ${kind} from ${other}` };
                    if (kind === "audio" && !(b.bytesReceived > a.bytesReceived && b.packetsReceived > 50)) {
                        return { ok: false, reason: `participant ${ids[i]}: audio from ${other} not rising` };
                    }
                    if (kind === "video" && !(b.framesDecoded > a.framesDecoded && b.framesDecoded > 30)) {
                        return { ok: false, reason: `participant ${ids[i]}: video from ${other} not decoding` };
                    }
                }
            }
        }
        return { ok: true };
    },
    // A call that keeps working until config.holdUntil (ms since the epoch): the window in which
    // scripts/browser-cost.py measures the server.
    hold(config, before, after) {
        const v = scenarios.call(config, before, after);
        if (!v.ok) return v;
        return Date.now() >= config.holdUntil ? v : { ok: false, reason: "holding" };
    },
    // Participant 0 publishes 720p simulcast; participant 1 gets the top layer when nothing
    // constrains it.
    "simulcast-top"(config, before, after) {
        const v = scenarios.simulcast(config, before, after, true);
        return v;
    },
    // Participant 0 publishes 720p simulcast; participant 1 (on a constrained server) keeps decoding
    // frames at a width below the top layer's.
    simulcast(config, before, after, wantTop = false) {
        const sender = after[0];
        const top = Math.max(0, ...sender.outbound.filter((o) => o.kind === "video").map((o) => o.frameWidth || 0));
        const layers = sender.outbound.filter((o) => o.kind === "video" && o.bytesSent > 0).length;
        const a = consumerOf(before[1], config.participants[0].sessionId, "video");
        const b = consumerOf(after[1], config.participants[0].sessionId, "video");
        const extra = { topWidth: top, layersSent: layers, receivedWidth: b && b.frameWidth };
        if (!a || !b) return { ok: false, reason: "no video consumer yet", extra };
        if (layers < 3) return { ok: false, reason: `the sender sends ${layers} layers`, extra };
        if (!(b.framesDecoded > a.framesDecoded + 10)) return { ok: false, reason: "not decoding", extra };
        const good = wantTop ? b.frameWidth === top : b.frameWidth > 0 && b.frameWidth < top;
        if (!good) return { ok: false, reason: `received width ${b.frameWidth} vs top ${top}`, extra };
        return { ok: true, extra };
    },
};

const here = path.dirname(fileURLToPath(import.meta.url));
const config = JSON.parse(process.argv[2]);
const timeoutMs = config.timeoutMs ?? 60000;
const started = Date.now();
if (config.holdMs) config.holdUntil = started + config.holdMs;
const log = (...args) => console.error(`[e2e +${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args);

const bundle = await esbuild.build({
    entryPoints: [path.join(here, "client.js")],
    bundle: true,
    write: false,
    format: "iife",
    platform: "browser",
    logLevel: "error",
});
const script = bundle.outputFiles[0].text;

const server = http.createServer((req, res) => {
    if (req.url.startsWith("/bundle.js")) {
        res.writeHead(200, { "content-type": "text/javascript" });
        res.end(script);
    } else {
        res.writeHead(200, { "content-type": "text/html" });
        res.end('<!doctype html><html><body><script src="/bundle.js"></script></body></html>');
    }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({
    executablePath: config.chromium ?? "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
});

let result = { ok: false, scenario: config.scenario, participants: [] };
let exitCode = 1;
try {
    const pages = [];
    for (const p of config.participants) {
        const context = await browser.newContext();
        const page = await context.newPage();
        page.on("console", (m) => m.type() === "error" && log("page error:", m.text()));
        page.on("pageerror", (e) => log("page exception:", e.message));
        await page.goto(pageUrl);
        await page.evaluate((options) => window.ringsfu.start(options), p);
        pages.push(page);
        log(`participant ${pages.length} joined`);
    }
    const reports = async () => Promise.all(pages.map((page) => page.evaluate(() => window.ringsfu.report())));
    const check = scenarios[config.scenario];
    let previous = await reports();
    while (Date.now() - started < timeoutMs) {
        await new Promise((r) => setTimeout(r, 1000));
        const current = await reports();
        const verdict = check(config, previous, current);
        result = { ok: verdict.ok, scenario: config.scenario, reason: verdict.reason, participants: current, extra: verdict.extra };
        if (verdict.ok) {
            exitCode = 0;
            break;
        }
        previous = current;
    }
} catch (e) {
    result.error = String(e && e.stack ? e.stack : e);
} finally {
    console.log(`RESULT ${JSON.stringify(result)}`);
    await browser.close().catch(() => {});
    server.close();
    process.exit(exitCode);
}


// The test-call page: joins the room of `?room=` (default "demo") through `demo/join`, publishes
// the camera and microphone, shows everyone, and refreshes each tile's readings every second.
import { Call } from "./call.js";
import { Rate, formatBitrate, formatPath, inbound, outbound, selectedPath } from "./stats.js";
import { Tile, offerSound, setStatus } from "./tiles.js";

const REFRESH_MS = 1000;

const room = new URLSearchParams(location.search).get("room") || "demo";
const grid = document.getElementById("tiles");
/** Remote tiles by `<sessionId>/<camera|screen>`, with their consumers and rate meters. */
const remotes = new Map();

async function main() {
    document.getElementById("room").textContent = room;
    const self = new Tile(grid, "self", "you");
    const tracks = await localMedia();
    const camera = tracks.find((t) => t.kind === "video");
    if (camera) self.show(camera);

    setStatus("joining…");
    const response = await fetch("demo/join", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ room }),
    });
    const joined = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`join refused (${response.status}): ${joined.error || response.statusText}`);

    const call = new Call({
        onConsumer: (c) => addConsumer(c),
        onLeave: (sessionId) => removeSession(sessionId),
        onClosed: (code) => setStatus(`disconnected (WebSocket close ${code}); reload to rejoin`, "error"),
        onError: (what, e) => setStatus(`${what} failed: ${e.message}`, "error"),
    });
    await call.join(joined, tracks);
    self.element.querySelector("figcaption").textContent = `you (session ${joined.sessionId})`;
    setStatus(`in the call as session ${joined.sessionId}`);

    const sent = new Rate();
    let busy = false;
    setInterval(async () => {
        if (busy) return;
        busy = true;
        try {
            await refresh(call, self, sent);
        } finally {
            busy = false;
        }
    }, REFRESH_MS);
}

/** Camera and microphone, else whichever is available, else nothing (the page still watches). */
async function localMedia() {
    if (!navigator.mediaDevices) {
        setStatus("this page is not a secure context (https or localhost): joining without camera", "warn");
        return [];
    }
    const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
    for (const constraints of [{ audio: true, video }, { video }, { audio: true }]) {
        try {
            return (await navigator.mediaDevices.getUserMedia(constraints)).getTracks();
        } catch (e) {
            console.warn("getUserMedia", constraints, e);
        }
    }
    setStatus("no camera or microphone: joining to watch only", "warn");
    return [];
}

function addConsumer({ sessionId, type, kind, consumer }) {
    const key = `${sessionId}/${type === "screen" ? "screen" : "camera"}`;
    let remote = remotes.get(key);
    if (!remote) {
        const title = type === "screen" ? `session ${sessionId} (screen)` : `session ${sessionId}`;
        remote = { sessionId, tile: new Tile(grid, key, title), video: null, rate: new Rate() };
        remotes.set(key, remote);
    }
    if (kind === "video") {
        remote.video = consumer;
        remote.rate = new Rate();
        remote.tile.show(consumer.track);
    } else {
        remote.tile.play(consumer.track).then((playing) => playing || offerSound());
    }
}

function removeSession(sessionId) {
    for (const [key, remote] of remotes) {
        if (remote.sessionId !== sessionId) continue;
        remote.tile.remove();
        remotes.delete(key);
    }
}

async function refresh(call, self, sent) {
    const send = call.sendTransport;
    if (send) {
        self.set("transport", `send: ${send.connectionState}`);
        const path = selectedPath(await send.getStats());
        self.set("path", formatPath(path), { protocol: path ? path.protocol : "" });
        let bytes = 0;
        let timestamp = 0;
        const layers = [];
        for (const producer of call.producers) {
            for (const stat of outbound(await producer.getStats())) {
                bytes += stat.bytesSent || 0;
                timestamp = Math.max(timestamp, stat.timestamp);
                if (stat.kind === "video" && stat.frameWidth) layers.push(`${stat.frameWidth}x${stat.frameHeight}`);
            }
        }
        self.set("bitrate", `out ${formatBitrate(sent.update(bytes, timestamp))}`);
        self.set("layer", layers.length ? `sending ${layers.length}: ${layers.sort(byWidth).join(", ")}` : "not sending video");
    }
    const recv = call.recvTransport;
    if (!recv || remotes.size === 0) return;
    const state = `receive: ${recv.connectionState}`;
    const path = selectedPath(await recv.getStats());
    for (const remote of remotes.values()) {
        remote.tile.set("transport", state);
        remote.tile.set("path", formatPath(path), { protocol: path ? path.protocol : "" });
        const stat = remote.video && !remote.video.closed ? inbound(await remote.video.getStats()) : null;
        if (!stat) {
            remote.tile.set("bitrate", "no video");
            remote.tile.set("layer", "–");
            continue;
        }
        remote.tile.set("bitrate", `in ${formatBitrate(remote.rate.update(stat.bytesReceived, stat.timestamp))}`);
        const fps = stat.framesPerSecond ? `, ${Math.round(stat.framesPerSecond)} fps` : "";
        remote.tile.set("layer", stat.frameWidth ? `${stat.frameWidth}x${stat.frameHeight}${fps}` : "no frames yet");
    }
}

function byWidth(a, b) {
    return parseInt(a, 10) - parseInt(b, 10);
}

main().catch((e) => {
    console.error(e);
    setStatus(e.message, "error");
});

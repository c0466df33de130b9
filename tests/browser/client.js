// A browser participant following the Odoo Discuss client's flow (odoo/sfu's client.ts) on
// mediasoup-client: the same bus envelopes, the same transport and producer options. Bundled by
// esbuild and loaded in headless Chromium by e2e.mjs.
import { Device } from "mediasoup-client";

class Bus {
    constructor(ws, onRequest, onMessage) {
        this.ws = ws;
        this.nextId = 0;
        this.pending = new Map();
        this.onRequest = onRequest;
        this.onMessage = onMessage;
        ws.addEventListener("message", (event) => this.receive(event.data));
    }

    send(envelopes) {
        this.ws.send(JSON.stringify(envelopes));
    }

    message(name, payload) {
        this.send([{ message: { name, payload } }]);
    }

    request(name, payload) {
        const id = `c_0_${this.nextId++}`;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new Error(`${name}: no reply`));
            }, 5000);
            this.pending.set(id, { resolve, reject, timer });
            this.send([{ message: { name, payload }, needResponse: id }]);
        });
    }

    async receive(data) {
        for (const env of JSON.parse(data)) {
            if (env.responseTo !== undefined) {
                const pending = this.pending.get(env.responseTo);
                if (!pending) continue;
                this.pending.delete(env.responseTo);
                clearTimeout(pending.timer);
                if (env.error) pending.reject(new Error(env.error));
                else pending.resolve(env.message);
            } else if (env.needResponse !== undefined) {
                try {
                    const message = await this.onRequest(env.message);
                    const reply = { responseTo: env.needResponse };
                    if (message !== undefined) reply.message = message;
                    this.send([reply]);
                } catch (e) {
                    window.ringsfuLog.push(`request ${env.message.name} failed: ${e}`);
                }
            } else {
                this.onMessage(env.message);
            }
        }
    }
}

class Participant {
    constructor(options) {
        this.options = options;
        this.device = new Device();
        this.consumers = [];
        this.producers = {};
        this.closed = null;
        this.events = [];
    }

    start() {
        const { url, channelUUID, jwt } = this.options;
        return new Promise((resolve, reject) => {
            const ws = new WebSocket(url.replace(/^http/, "ws"));
            this.ws = ws;
            ws.addEventListener("open", () => ws.send(JSON.stringify({ channelUUID, jwt })));
            ws.addEventListener("close", (event) => {
                this.closed = event.code;
                reject(new Error(`closed ${event.code}`));
            });
            // The first frame, whatever it is, acknowledges the authentication.
            ws.addEventListener(
                "message",
                () => {
                    this.bus = new Bus(
                        ws,
                        (message) => this.onRequest(message),
                        (message) => this.events.push(message),
                    );
                    resolve();
                },
                { once: true },
            );
        });
    }

    async onRequest({ name, payload }) {
        switch (name) {
            case "INIT_TRANSPORTS":
                return this.initTransports(payload);
            case "INIT_CONSUMER":
                return this.initConsumer(payload);
            default:
                return undefined;
        }
    }

    async initTransports({ capabilities, stcConfig, ctsConfig, producerOptionsByKind }) {
        this.producerOptionsByKind = producerOptionsByKind;
        this.offered = stcConfig.iceCandidates;
        await this.device.load({ routerRtpCapabilities: capabilities });
        // Odoo hands its own TURN servers (`iceServers`) to both transports; a scenario may also
        // force the relay (`iceTransportPolicy: "relay"`) to prove that path carries the call.
        const { iceServers, iceTransportPolicy } = this.options;
        const network = { ...(iceServers && { iceServers }), ...(iceTransportPolicy && { iceTransportPolicy }) };
        this.recvTransport = this.device.createRecvTransport({ ...stcConfig, ...network });
        this.recvTransport.on("connect", ({ dtlsParameters }, callback, errback) =>
            this.bus.request("CONNECT_STC_TRANSPORT", { dtlsParameters }).then(() => callback(), errback),
        );
        this.sendTransport = this.device.createSendTransport({ ...ctsConfig, ...network });
        this.sendTransport.on("connect", ({ dtlsParameters }, callback, errback) =>
            this.bus.request("CONNECT_CTS_TRANSPORT", { dtlsParameters }).then(() => callback(), errback),
        );
        this.sendTransport.on("produce", async ({ kind, rtpParameters, appData }, callback, errback) => {
            try {
                const result = await this.bus.request("INIT_PRODUCER", { type: appData.type, kind, rtpParameters });
                callback({ id: result.id });
            } catch (e) {
                errback(e);
            }
        });
        // Produce once connected, as Odoo does after the reply.
        setTimeout(() => this.produce().catch((e) => window.ringsfuLog.push(`produce failed: ${e}`)), 0);
        return this.device.rtpCapabilities;
    }

    async produce() {
        const publish = this.options.publish || {};
        if (!publish.audio && !publish.video) return;
        const stream = await navigator.mediaDevices.getUserMedia({
            audio: !!publish.audio,
            video: publish.video ? { width: publish.width || 1280, height: publish.height || 720, frameRate: 30 } : false,
        });
        for (const track of stream.getTracks()) {
            const type = track.kind === "audio" ? "audio" : "camera";
            const options = this.producerOptionsByKind[track.kind];
            this.producers[type] = await this.sendTransport.produce({ ...options, track, appData: { type } });
        }
    }

    async initConsumer({ id, kind, producerId, rtpParameters, sessionId, active, type }) {
        const consumer = await this.recvTransport.consume({ id, producerId, kind, rtpParameters });
        if (active) consumer.resume();
        else consumer.pause();
        const element = document.createElement(kind === "audio" ? "audio" : "video");
        element.autoplay = true;
        element.muted = true;
        element.playsInline = true;
        element.srcObject = new MediaStream([consumer.track]);
        document.body.appendChild(element);
        element.play().catch(() => {});
        this.consumers.push({ consumer, sessionId, type, kind });
        return undefined;
    }

    async report() {
        const consumers = [];
        for (const { consumer, sessionId, type, kind } of this.consumers) {
            const entry = { sessionId, type, kind, closed: consumer.closed };
            for (const stat of (await consumer.getStats()).values()) {
                if (stat.type === "inbound-rtp") {
                    entry.bytesReceived = stat.bytesReceived;
                    entry.packetsReceived = stat.packetsReceived;
                    entry.packetsLost = stat.packetsLost;
                    entry.framesDecoded = stat.framesDecoded;
                    entry.frameWidth = stat.frameWidth;
                    entry.frameHeight = stat.frameHeight;
                    entry.totalSamplesReceived = stat.totalSamplesReceived;
                }
            }
            consumers.push(entry);
        }
        const transport = async (t) => {
            if (!t) return null;
            const stats = await t.getStats();
            for (const stat of stats.values()) {
                if (stat.type === "transport") {
                    return {
                        srtpCipher: stat.srtpCipher,
                        dtlsCipher: stat.dtlsCipher,
                        dtlsState: stat.dtlsState,
                        tlsVersion: stat.tlsVersion,
                        pair: selectedPair(stats, stat),
                    };
                }
            }
            return null;
        };
        const outbound = [];
        for (const producer of Object.values(this.producers)) {
            for (const stat of (await producer.getStats()).values()) {
                if (stat.type === "outbound-rtp") {
                    outbound.push({ kind: stat.kind, rid: stat.rid, bytesSent: stat.bytesSent, frameWidth: stat.frameWidth, active: stat.active });
                }
            }
        }
        return {
            closed: this.closed,
            consumers,
            outbound,
            offered: this.offered,
            send: await transport(this.sendTransport),
            recv: await transport(this.recvTransport),
            log: window.ringsfuLog,
        };
    }
}

// The ICE path media takes: the transport's selected candidate pair and both its candidates.
function selectedPair(stats, transport) {
    const pair = stats.get(transport.selectedCandidatePairId);
    if (!pair) return null;
    const candidate = (id) => {
        const c = stats.get(id) || {};
        return { protocol: c.protocol, type: c.candidateType, relayProtocol: c.relayProtocol, address: c.address, port: c.port };
    };
    return {
        state: pair.state,
        bytesSent: pair.bytesSent,
        bytesReceived: pair.bytesReceived,
        local: candidate(pair.localCandidateId),
        remote: candidate(pair.remoteCandidateId),
    };
}

window.ringsfuLog = [];
window.ringsfu = {
    async start(options) {
        window.participant = new Participant(options);
        await window.participant.start();
    },
    report() {
        return window.participant.report();
    },
};

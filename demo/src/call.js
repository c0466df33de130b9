// One participant of a channel, as the Odoo Discuss client joins it: mediasoup-client's send
// transport publishes the camera (simulcast, with the server's producer options) and microphone,
// its receive transport consumes everyone else.
import { Device } from "mediasoup-client";
import { Bus, connect } from "./bus.js";

export class Call {
    /**
     * @param {object} events
     * @param {(c: {sessionId, type, kind, consumer}) => void} events.onConsumer a new consumer
     * @param {(sessionId) => void} events.onLeave a session left
     * @param {(code: number) => void} events.onClosed the bus closed
     * @param {(what: string, error: Error) => void} events.onError something failed
     */
    constructor(events) {
        this.events = events;
        this.device = new Device();
        this.sendTransport = null;
        this.recvTransport = null;
        this.producers = [];
        this.consumers = new Map();
        this.tracks = [];
    }

    /** Joins the channel; `tracks` (camera, microphone) are published once the transports exist. */
    async join({ url, channelUUID, jwt }, tracks) {
        this.tracks = tracks;
        const ws = await connect(url, channelUUID, jwt);
        ws.addEventListener("close", (event) => this.events.onClosed(event.code));
        this.bus = new Bus(
            ws,
            (message) => this.onRequest(message),
            (message) => this.onMessage(message),
        );
    }

    onRequest({ name, payload }) {
        switch (name) {
            case "INIT_TRANSPORTS":
                return this.initTransports(payload);
            case "INIT_CONSUMER":
                return this.initConsumer(payload);
            default:
                // PING and anything newer: a void reply.
                return Promise.resolve(undefined);
        }
    }

    onMessage({ name, payload }) {
        if (name === "SESSION_LEAVE") {
            for (const [id, entry] of this.consumers) {
                if (entry.sessionId !== payload.sessionId) continue;
                entry.consumer.close();
                this.consumers.delete(id);
            }
            this.events.onLeave(payload.sessionId);
        }
    }

    async initTransports({ capabilities, ctsConfig, stcConfig, producerOptionsByKind }) {
        await this.device.load({ routerRtpCapabilities: capabilities });
        this.recvTransport = this.device.createRecvTransport(stcConfig);
        this.recvTransport.on("connect", ({ dtlsParameters }, callback, errback) =>
            this.bus.request("CONNECT_STC_TRANSPORT", { dtlsParameters }).then(() => callback(), errback),
        );
        this.sendTransport = this.device.createSendTransport(ctsConfig);
        this.sendTransport.on("connect", ({ dtlsParameters }, callback, errback) =>
            this.bus.request("CONNECT_CTS_TRANSPORT", { dtlsParameters }).then(() => callback(), errback),
        );
        this.sendTransport.on("produce", ({ kind, rtpParameters, appData }, callback, errback) =>
            this.bus
                .request("INIT_PRODUCER", { type: appData.type, kind, rtpParameters })
                .then(({ id }) => callback({ id }), errback),
        );
        // Publish after this request's reply, as the Odoo client does.
        setTimeout(() => this.publish(producerOptionsByKind), 0);
        return this.device.rtpCapabilities;
    }

    async publish(optionsByKind) {
        for (const track of this.tracks) {
            const type = track.kind === "audio" ? "audio" : "camera";
            try {
                const producer = await this.sendTransport.produce({
                    ...optionsByKind[track.kind],
                    track,
                    appData: { type },
                });
                this.producers.push(producer);
            } catch (e) {
                this.events.onError(`publishing the ${type}`, e);
            }
        }
    }

    async initConsumer({ id, kind, producerId, rtpParameters, sessionId, type }) {
        const consumer = await this.recvTransport.consume({ id, producerId, kind, rtpParameters });
        // The server decides what flows (`active`, pauses); the local track always plays it.
        consumer.resume();
        this.consumers.set(id, { consumer, sessionId, type, kind });
        this.events.onConsumer({ sessionId, type, kind, consumer });
        return undefined;
    }
}

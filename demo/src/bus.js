// The Odoo SFU bus on one WebSocket (docs: odoo-sfu-protocol.md §2): the first frame sent is the
// credentials, the first frame received acknowledges them, and every later frame is a JSON array
// of envelopes; requests carry `needResponse` and are answered with `responseTo`.

const REQUEST_TIMEOUT_MS = 5000;

export class Bus {
    /**
     * @param {WebSocket} ws an authenticated socket
     * @param {(message: {name: string, payload: any}) => Promise<any>} onRequest answers a server request
     * @param {(message: {name: string, payload: any}) => void} onMessage receives everything else
     */
    constructor(ws, onRequest, onMessage) {
        this.ws = ws;
        this.nextId = 0;
        this.pending = new Map();
        this.onRequest = onRequest;
        this.onMessage = onMessage;
        ws.addEventListener("message", (event) => this.receive(event.data));
    }

    message(name, payload) {
        this.send([{ message: { name, payload } }]);
    }

    request(name, payload) {
        const id = `c_demo_${this.nextId++}`;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new Error(`${name}: no reply within ${REQUEST_TIMEOUT_MS / 1000} s`));
            }, REQUEST_TIMEOUT_MS);
            this.pending.set(id, { resolve, reject, timer });
            this.send([{ message: { name, payload }, needResponse: id }]);
        });
    }

    send(envelopes) {
        if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(envelopes));
    }

    receive(data) {
        let envelopes;
        try {
            envelopes = JSON.parse(data);
        } catch {
            return;
        }
        for (const envelope of envelopes) {
            if (envelope.responseTo !== undefined) this.settle(envelope);
            else if (envelope.needResponse !== undefined) this.answer(envelope);
            else this.onMessage(envelope.message);
        }
    }

    settle({ responseTo, message, error }) {
        const pending = this.pending.get(responseTo);
        if (!pending) return;
        this.pending.delete(responseTo);
        clearTimeout(pending.timer);
        if (error) pending.reject(new Error(error));
        else pending.resolve(message);
    }

    async answer({ message, needResponse }) {
        let result;
        try {
            result = await this.onRequest(message);
        } catch (e) {
            // No reply, as in the Odoo client: the server retries or gives up.
            console.warn(`${message.name} failed:`, e);
            return;
        }
        const reply = { responseTo: needResponse };
        if (result !== undefined) reply.message = result;
        this.send([reply]);
    }
}

/**
 * Opens the bus at `url` (http(s) → ws(s)) and authenticates; resolves with the socket once the
 * server acknowledged, rejects with the close code if it closed first.
 */
export function connect(url, channelUUID, jwt) {
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(url.replace(/^http/, "ws"));
        const refused = (event) => reject(new Error(`the bus closed before joining (code ${event.code})`));
        ws.addEventListener("close", refused, { once: true });
        ws.addEventListener("open", () => ws.send(JSON.stringify({ channelUUID, jwt })), { once: true });
        ws.addEventListener(
            "message",
            () => {
                ws.removeEventListener("close", refused);
                resolve(ws);
            },
            { once: true },
        );
    });
}

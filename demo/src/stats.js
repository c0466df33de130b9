// What the tiles show, read from WebRTC statistics (RTCStatsReport).

/**
 * The candidate pair ICE selected: the transport's `selectedCandidatePairId`, else a pair marked
 * `selected` (Firefox) or nominated and succeeded. `{protocol, local, remote, type}` or null.
 */
export function selectedPath(report) {
    let pair = null;
    for (const stat of report.values()) {
        if (stat.type === "transport" && stat.selectedCandidatePairId) pair = report.get(stat.selectedCandidatePairId);
    }
    if (!pair) {
        for (const stat of report.values()) {
            if (stat.type === "candidate-pair" && (stat.selected || (stat.nominated && stat.state === "succeeded"))) {
                pair = stat;
            }
        }
    }
    if (!pair) return null;
    const local = report.get(pair.localCandidateId) || {};
    const remote = report.get(pair.remoteCandidateId) || {};
    return {
        protocol: (remote.protocol || local.protocol || "?").toLowerCase(),
        local: endpoint(local),
        remote: endpoint(remote),
        type: local.candidateType || "?",
    };
}

function endpoint(candidate) {
    // Chromium hides a host candidate's address (mDNS) until the page may use the camera.
    const address = candidate.address || candidate.ip || "(hidden)";
    return address.includes(":") ? `[${address}]:${candidate.port}` : `${address}:${candidate.port}`;
}

/** The `inbound-rtp` entry of a consumer's report. */
export function inbound(report) {
    for (const stat of report.values()) if (stat.type === "inbound-rtp") return stat;
    return null;
}

/** The `outbound-rtp` entries of a producer's report: one per simulcast encoding. */
export function outbound(report) {
    return [...report.values()].filter((stat) => stat.type === "outbound-rtp");
}

/** Bits per second between two byte counters read at two `timestamp`s (ms). */
export class Rate {
    constructor() {
        this.last = null;
    }

    update(bytes, timestamp) {
        const last = this.last;
        this.last = { bytes, timestamp };
        if (!last || timestamp <= last.timestamp || bytes < last.bytes) return null;
        return ((bytes - last.bytes) * 8 * 1000) / (timestamp - last.timestamp);
    }
}

export function formatBitrate(bps) {
    if (bps === null || bps === undefined) return "…";
    if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mb/s`;
    return `${Math.round(bps / 1e3)} kb/s`;
}

export function formatPath(path) {
    if (!path) return "not yet selected";
    return `${path.protocol} ${path.local} ⇄ ${path.remote} (${path.type})`;
}

// The page's DOM: one tile per participant with its video and a list of readings. Tests read the
// readings by their `data-field` names (transport, path, bitrate, layer).

const FIELDS = [
    ["transport", "transport"],
    ["path", "ICE path"],
    ["bitrate", "bitrate"],
    ["layer", "layer"],
];

export class Tile {
    constructor(grid, key, title) {
        this.element = document.createElement("figure");
        this.element.className = "tile";
        this.element.dataset.tile = key;
        this.video = document.createElement("video");
        this.video.autoplay = true;
        this.video.playsInline = true;
        // Sound plays from a separate element, so the video may start without a user gesture.
        this.video.muted = true;
        const caption = document.createElement("figcaption");
        caption.textContent = title;
        const list = document.createElement("dl");
        this.fields = {};
        for (const [name, label] of FIELDS) {
            const term = document.createElement("dt");
            term.textContent = label;
            const value = document.createElement("dd");
            value.dataset.field = name;
            value.textContent = "…";
            list.append(term, value);
            this.fields[name] = value;
        }
        this.element.append(this.video, caption, list);
        grid.append(this.element);
        this.audio = null;
    }

    show(track) {
        this.video.srcObject = new MediaStream([track]);
        this.video.play().catch(() => {});
    }

    /** Plays `track`; resolves false when the browser wants a click first (autoplay policy). */
    play(track) {
        if (!this.audio) {
            this.audio = document.createElement("audio");
            this.audio.autoplay = true;
            this.element.append(this.audio);
        }
        this.audio.srcObject = new MediaStream([track]);
        return this.audio.play().then(
            () => true,
            () => false,
        );
    }

    set(field, text, attributes = {}) {
        const element = this.fields[field];
        if (element.textContent !== text) element.textContent = text;
        for (const [name, value] of Object.entries(attributes)) element.dataset[name] = value;
    }

    remove() {
        this.element.remove();
    }
}

export function setStatus(text, kind = "info") {
    const element = document.getElementById("status");
    element.textContent = text;
    element.dataset.kind = kind;
}

/** A button that starts every muted-by-policy `<audio>` on the first click. */
export function offerSound() {
    const button = document.getElementById("sound");
    if (!button.hidden) return;
    button.hidden = false;
    button.addEventListener(
        "click",
        () => {
            for (const audio of document.querySelectorAll("audio")) audio.play().catch(() => {});
            button.hidden = true;
        },
        { once: true },
    );
}

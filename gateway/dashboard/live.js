// The live feed: /mxt_websocket/events, resumed from the last sequence after a drop.

export class EventFeed {
  /**
   * @param {Object} filters run, kind, programme (query parameters of the hub)
   * @param {(frame: Object) => void} onEvent called for each event frame, in stream order
   */
  constructor(filters, onEvent) {
    this.filters = filters;
    this.onEvent = onEvent;
    this.lastSeq = null;
    this.closed = false;
    this.retry = 500;
    this.ready = new Promise((resolve) => { this.resolveReady = resolve; });
    this.connect();
  }

  url() {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(this.filters)) if (value) params.set(key, value);
    if (this.lastSeq !== null) params.set("since_seq", String(this.lastSeq));
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/mxt_websocket/events?${params}`;
  }

  connect() {
    setStatus("connecting");
    this.socket = new WebSocket(this.url());
    this.socket.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.type === "hello") {
        // events we missed have expired from the stream: redraw the page from the APIs
        if (frame.gap && this.lastSeq !== null) window.dispatchEvent(new HashChangeEvent("hashchange"));
        if (this.lastSeq === null) this.lastSeq = frame.since_seq;
        this.retry = 500;
        setStatus("on");
        this.resolveReady(frame.since_seq);
      } else if (frame.type === "event" && frame.seq > this.lastSeq) {
        this.lastSeq = frame.seq;
        this.onEvent(frame);
      }
    };
    this.socket.onclose = (close) => {
      if (this.closed) return;
      // 1008: our filter is wrong, retrying cannot help; anything else: resume later
      if (close.code === 1008) { setStatus(`refused: ${close.reason}`); return; }
      setStatus("reconnecting");
      setTimeout(() => this.closed || this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }

  close() {
    this.closed = true;
    this.socket?.close();
  }
}

function setStatus(text) {
  const node = document.getElementById("feed-status");
  if (!node) return;
  node.textContent = `live: ${text}`;
  node.dataset.state = text === "on" ? "on" : "off";
}

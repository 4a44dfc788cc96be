// A small socket.io client: Engine.IO protocol 4 over a WebSocket only (no
// long-polling, no binary packets, the default namespace). It is what the
// app needs of the official client, which is not available here: connect,
// answer the server's pings, deliver events, and reconnect with a backoff.
//
// Engine.IO packets are text frames whose first character is the type:
// 0 open (JSON handshake), 1 close, 2 ping, 3 pong, 4 message. A message
// carries a socket.io packet, again typed by its first character:
// 0 CONNECT, 1 DISCONNECT, 2 EVENT (a JSON array [name, ...args]),
// 4 CONNECT_ERROR.

export class Socket {
  constructor(path = "/socket.io/") {
    this.path = path;
    this.handlers = new Map(); // event name -> Set of functions; "*" gets every event
    this.attempt = 0;
    this.connected = false;
    this.closed = false;
    this.ws = null;
    this.watchdog = 0;
    this.retry = 0;
  }

  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return this;
  }

  fire(event, ...args) {
    for (const fn of this.handlers.get(event) || []) fn(...args);
    if (!event.startsWith("$")) for (const fn of this.handlers.get("*") || []) fn(event, ...args);
  }

  open() {
    this.closed = false;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}${this.path}?EIO=4&transport=websocket`);
    this.ws = ws;
    ws.onmessage = (e) => this.packet(typeof e.data === "string" ? e.data : "");
    ws.onclose = () => this.lost(ws);
    ws.onerror = () => ws.close();
  }

  close() {
    this.closed = true;
    clearTimeout(this.retry);
    clearTimeout(this.watchdog);
    if (this.ws) this.ws.close(1000);
  }

  // The server pings every pingInterval and gives up after pingTimeout
  // more; silence for that long here means the connection is dead, even
  // if the browser has not noticed.
  arm() {
    clearTimeout(this.watchdog);
    const ws = this.ws;
    this.watchdog = setTimeout(() => ws.close(), this.pingInterval + this.pingTimeout);
  }

  packet(data) {
    switch (data[0]) {
      case "0": {
        const hs = JSON.parse(data.slice(1));
        this.pingInterval = hs.pingInterval || 25000;
        this.pingTimeout = hs.pingTimeout || 20000;
        this.arm();
        this.ws.send("40"); // socket.io CONNECT to "/"
        break;
      }
      case "1":
        this.ws.close();
        break;
      case "2":
        this.arm();
        this.ws.send("3" + data.slice(1));
        break;
      case "4":
        this.message(data.slice(1));
        break;
    }
  }

  message(p) {
    switch (p[0]) {
      case "0":
        this.connected = true;
        this.attempt = 0;
        this.fire("$connect");
        break;
      case "1":
        this.ws.close();
        break;
      case "2": {
        // [/namespace,][ack id]JSON
        let i = 1;
        if (p[i] === "/") i = p.indexOf(",", i) + 1;
        while (p[i] >= "0" && p[i] <= "9") i++;
        let arr;
        try { arr = JSON.parse(p.slice(i)); } catch { return; }
        if (Array.isArray(arr) && typeof arr[0] === "string") this.fire(arr[0], ...arr.slice(1));
        break;
      }
      case "4":
        this.fire("$error", p.slice(1));
        break;
    }
  }

  lost(ws) {
    if (ws !== this.ws) return;
    clearTimeout(this.watchdog);
    const was = this.connected;
    this.connected = false;
    if (was) this.fire("$disconnect");
    if (this.closed) return;
    // 0.5 s doubling to 15 s, with jitter so that a restarted slice is not
    // hit by every tab at once.
    const delay = Math.min(15000, 500 * 2 ** this.attempt++) * (0.75 + Math.random() / 2);
    this.retry = setTimeout(() => this.open(), delay);
  }
}

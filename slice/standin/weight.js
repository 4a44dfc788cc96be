// The stand-in's weight model (weight.go documents the parameters and their
// sources). Once the page is logged in, it builds what WhatsApp Web keeps in
// a browser: models for chats, messages and contacts, an IndexedDB store of
// them, and the DOM of the chat list. A reloaded page (a restarted Chromium
// on the same profile) reads its models back from IndexedDB, as the real app
// does. Everything stays reachable from window.__standinWeight, so that the
// garbage collector keeps it, as the real app's collections do.
'use strict';
(() => {
  const P = { name: {{WEIGHT_NAME}}, chats: {{WEIGHT_CHATS}}, msgs: {{WEIGHT_MSGS}}, contacts: {{WEIGHT_CONTACTS}} };
  if (!P.name) return;
  const W = window.__standinWeight = { profile: P.name, state: 'waiting', source: '', chats: [], contacts: [], byId: new Map(), ms: 0 };
  const report = () => fetch('weight/status', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ profile: W.profile, state: W.state, source: W.source, chats: W.chats.length,
      messages: W.chats.reduce((n, c) => n + c.msgs.length, 0), contacts: W.contacts.length, ms: W.ms, error: W.error || '' }) }).catch(() => {});
  const sleep = ms => new Promise(r => setTimeout(r, ms));

  // A fixed-seed generator: every run builds the same account.
  let seed = 0x5eed17;
  const rnd = () => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) / 4294967296; };
  const WORDS = 'ok thanks see you tomorrow meeting price order delivered invoice please call me when can we the a to and is are at 10 am pm yes no maybe great sure photo address payment sent received'.split(' ');
  const text = n => { let s = ''; while (s.length < n) s += WORDS[(rnd() * WORDS.length) | 0] + ' '; return s.slice(0, n); };
  const hex = n => { let s = ''; for (let i = 0; i < n; i++) s += ((rnd() * 16) | 0).toString(16); return s.toUpperCase(); };

  // Shapes after whatsapp-web.js's structures (Message.js, Chat.js, Contact.js).
  class WWid { constructor(user, server) { this.server = server; this.user = user; this._serialized = user + '@' + server; } }
  class WMsg {
    constructor(r) {
      this.id = { fromMe: r.fromMe, remote: new WWid(r.remote, 'c.us'), id: r.mid, _serialized: r.id };
      this.body = r.body; this.type = 'chat'; this.t = r.t; this.ack = r.ack;
      this.from = r.fromMe ? '15550000000@c.us' : r.remote + '@c.us'; this.to = r.fromMe ? r.remote + '@c.us' : '15550000000@c.us';
      this.notifyName = r.notifyName; this.isNewMsg = false; this.star = false; this.broadcast = false; this.isForwarded = false;
      this.hasReaction = false; this.mentionedJidList = []; this.groupMentions = []; this.links = [];
      this.deviceType = 'android'; this.rowId = r.rowId; this._events = {};
    }
    record() { return { id: this.id._serialized, mid: this.id.id, fromMe: this.id.fromMe, remote: this.id.remote.user, body: this.body, t: this.t, ack: this.ack, notifyName: this.notifyName, rowId: this.rowId }; }
  }
  class WChat {
    constructor(r) {
      this.id = new WWid(r.user, 'c.us'); this.name = r.name; this.formattedTitle = r.name; this.t = r.t;
      this.unreadCount = r.unread; this.archive = false; this.pin = 0; this.muteExpiration = 0; this.isReadOnly = false;
      this.msgs = []; this.msgsById = new Map(); this._events = {};
    }
    record() { return { id: this.id._serialized, user: this.id.user, name: this.name, t: this.t, unread: this.unreadCount }; }
  }
  class WContact {
    constructor(r) {
      this.id = new WWid(r.user, 'c.us'); this.number = r.user; this.name = r.name; this.pushname = r.pushname; this.shortName = r.name.split(' ')[0];
      this.isBusiness = r.biz; this.isEnterprise = false; this.isMyContact = true; this.isUser = true; this.isWAContact = true;
      this.statusMute = false; this.labels = []; this.profilePicThumb = { eurl: r.pic, tag: r.tag }; this._events = {};
    }
    record() { return { id: this.id._serialized, user: this.id.user, name: this.name, pushname: this.pushname, biz: this.isBusiness, pic: this.profilePicThumb.eurl, tag: this.profilePicThumb.tag }; }
  }

  const STORES = ['chat', 'message', 'contact', 'meta'];
  const idbOpen = () => new Promise((res, rej) => {
    const rq = indexedDB.open('model-storage', 1);
    rq.onupgradeneeded = () => { for (const s of STORES) rq.result.createObjectStore(s, s === 'meta' ? undefined : { keyPath: 'id' }); };
    rq.onsuccess = () => res(rq.result); rq.onerror = () => rej(rq.error);
  });
  const done = tx => new Promise((res, rej) => { tx.oncomplete = res; tx.onerror = tx.onabort = () => rej(tx.error); });
  const req = rq => new Promise((res, rej) => { rq.onsuccess = () => res(rq.result); rq.onerror = () => rej(rq.error); });

  function row(list, chat) {
    // About the elements of one row of the real #pane-side.
    const last = chat.msgs[chat.msgs.length - 1];
    const r = document.createElement('div'); r.setAttribute('role', 'listitem'); r.className = 'w-row';
    r.innerHTML = '<div class="w-av"><img alt="" width="49" height="49"></div><div class="w-main"><div class="w-top">' +
      '<span class="w-title" dir="auto"></span><span class="w-time"></span></div><div class="w-bottom">' +
      '<span class="w-last" dir="ltr"></span>' + (chat.unreadCount ? '<span class="w-badge"></span>' : '') + '</div></div>';
    r.querySelector('.w-title').textContent = chat.formattedTitle;
    r.querySelector('.w-time').textContent = new Date(chat.t * 1000).toISOString().slice(11, 16);
    r.querySelector('.w-last').textContent = last ? last.body : '';
    if (chat.unreadCount) r.querySelector('.w-badge').textContent = String(chat.unreadCount);
    list.appendChild(r);
  }

  async function build() {
    const t0 = performance.now();
    const db = await idbOpen();
    const meta = await req(db.transaction('meta').objectStore('meta').get('profile'));
    const list = document.createElement('div'); list.id = 'weight-chat-list'; list.setAttribute('aria-label', 'Chat list (weight model)');
    document.body.appendChild(list);
    if (meta === P.name) {
      // A restarted page: models come back from IndexedDB.
      W.source = 'idb';
      const tx = db.transaction(['chat', 'message', 'contact']);
      const [cs, ms, ks] = await Promise.all(['chat', 'message', 'contact'].map(s => req(tx.objectStore(s).getAll())));
      for (const r of ks) W.contacts.push(new WContact(r));
      for (const r of cs) { const c = new WChat(r); W.chats.push(c); W.byId.set(c.id._serialized, c); }
      for (const r of ms) { const c = W.byId.get(r.remote + '@c.us'); if (c) { const m = new WMsg(r); c.msgs.push(m); c.msgsById.set(r.id, m); } }
      for (let i = 0; i < W.chats.length; i++) { row(list, W.chats[i]); if (i % 500 === 499) await sleep(0); }
    } else {
      W.source = 'built';
      { const tx = db.transaction(STORES, 'readwrite'); for (const s of STORES) tx.objectStore(s).clear(); await done(tx); }
      const now = 1790000000;
      let rowId = 0;
      for (let i = 0; i < P.contacts; i++) {
        const name = text(6 + ((rnd() * 14) | 0)).trim();
        W.contacts.push(new WContact({ user: String(4915100000000 + i), name, pushname: name, biz: rnd() < 0.1, pic: 'https://pps.whatsapp.net/v/t61.24694-24/' + hex(32) + '.jpg', tag: hex(10) }));
      }
      // Chunks of chats, each in one transaction; the page stays responsive.
      const CHUNK = 100;
      for (let i = 0; i < P.chats; i += CHUNK) {
        const tx = db.transaction(['chat', 'message', 'contact'], 'readwrite');
        for (let j = i; j < Math.min(i + CHUNK, P.chats); j++) {
          const k = W.contacts[j % W.contacts.length];
          const c = new WChat({ user: k.number, name: k.name, t: now - j * 60, unread: rnd() < 0.1 ? 1 + ((rnd() * 20) | 0) : 0 });
          W.chats.push(c); W.byId.set(c.id._serialized, c);
          for (let m = 0; m < P.msgs; m++) {
            const fromMe = rnd() < 0.5, mid = '3EB0' + hex(16);
            const msg = new WMsg({ id: fromMe + '_' + k.number + '@c.us_' + mid, mid, fromMe, remote: k.number, body: text(1 + ((rnd() * 160) | 0)),
              t: c.t - (P.msgs - m) * 300, ack: fromMe ? 3 : 0, notifyName: fromMe ? '' : k.pushname, rowId: ++rowId });
            c.msgs.push(msg); c.msgsById.set(msg.id._serialized, msg);
            tx.objectStore('message').put(msg.record());
          }
          tx.objectStore('chat').put(c.record());
          tx.objectStore('contact').put(k.record());
          row(list, c);
        }
        await done(tx);
        W.state = 'building ' + Math.min(i + CHUNK, P.chats) + '/' + P.chats;
      }
      // Strict: the marker must survive a killed browser, or a restarted page
      // would believe a store that was never flushed.
      const tx = db.transaction('meta', 'readwrite', { durability: 'strict' }); tx.objectStore('meta').put(P.name, 'profile'); await done(tx);
    }
    db.close();
    W.ms = Math.round(performance.now() - t0);
    W.state = 'ready';
  }

  (async () => {
    // The real app loads its models once logged in; so does the model.
    while (!document.getElementById('pane-side')) await sleep(500);
    W.state = 'building';
    report();
    try { await build(); } catch (e) { W.state = 'failed'; W.error = String(e); }
    report();
  })();
})();

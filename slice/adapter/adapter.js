// The slice's WhatsApp Web adapter, page side. Version: see VERSION.
//
// The slice injects this file into every new document of its WhatsApp tab
// (CDP Page.addScriptToEvaluateOnNewDocument) and gives it one way out, the
// binding __slicehubPush (CDP Runtime.addBinding). It reads WhatsApp Web's
// own data modules, never the DOM, and it only reads and sends: it stores
// nothing. When WhatsApp Web changes, this file is what changes: the slice
// loads a replacement from SLICE_WA_ADAPTER without a rebuild.
//
// Every module name and field below is the one whatsapp-web.js v1.34.6
// (github.com/pedroslopez/whatsapp-web.js, commit 03498ea, Apache-2.0)
// relies on:
//   window.require('WAWebCollections') -> {Chat, Msg, Contact}; Msg.on('add')
//     with msg.isNewMsg, Msg.on('change:ack', (msg, ack)),
//     Chat.on('change:unreadCount') .................. src/Client.js inject()
//   Msg model: id {fromMe, remote, _serialized}, body, caption, type, t, ack,
//     notifyName, mimetype, size ............... src/structures/Message.js
//   Chat model: id, name, formattedTitle, unreadCount, t, msgs
//                           ................ src/util/Injected/Utils.js getChatModel
//   chat.msgs.getModelsArray(), WAWebChatLoadMessages.loadEarlierMsgs(chat,
//     chat.msgs) .............................. src/structures/Chat.js fetchMessages
//   WAWebWidFactory.createWid, WAWebMsgKey (newId(), new MsgKey({from, to,
//     id, selfDir:'out'})), WAWebUserPrefsMeUser.getMaybeMePnUser,
//     WAWebSendMsgChatAction.addAndSendMsgToChat(chat, msg) -> [msgPromise,
//     sendResultPromise] .................... src/util/Injected/Utils.js sendMessage
//   WAWebUpdateUnreadChatAction.sendSeen({chat}) ... src/util/Injected/Utils.js sendSeen
//   WAWebSocketModel.Socket.state ........................... src/Client.js
// wa-js (github.com/wppconnect-team/wa-js) wraps the same modules as WPP.
(() => {
  'use strict';
  if (window.top !== window || window.__slicehub) return;
  const VERSION = 'slicehub-wa-adapter/1';
  const BINDING = '__slicehubPush';
  const REQUIRED = ['WAWebCollections', 'WAWebWidFactory', 'WAWebMsgKey', 'WAWebSendMsgChatAction', 'WAWebUserPrefsMeUser'];
  const GIVE_UP_MS = 60000;

  const push = ev => {
    try { window[BINDING](JSON.stringify(ev)); } catch (e) { /* no binding: nobody listens */ }
  };
  const mod = name => {
    try { return typeof window.require === 'function' ? window.require(name) : null; } catch (e) { return null; }
  };
  const missing = () => {
    const out = REQUIRED.filter(n => !mod(n));
    const c = mod('WAWebCollections');
    if (c) {
      for (const k of ['Chat', 'Msg']) {
        if (!c[k] || typeof c[k].on !== 'function' || typeof c[k].getModelsArray !== 'function') out.push('WAWebCollections.' + k);
      }
    }
    return out;
  };
  const ser = id => (id && id._serialized) ? id._serialized : String(id || '');
  const chatOf = c => ({
    id: ser(c.id), name: String(c.name || c.formattedTitle || ''),
    unread: Math.max(0, c.unreadCount | 0), t: c.t | 0,
  });
  const msgOf = m => ({
    id: ser(m.id), chat: ser(m.id && m.id.remote), fromMe: !!(m.id && m.id.fromMe),
    // A media message's body is its thumbnail; its text is the caption.
    body: String((m.type === 'chat' ? m.body : m.caption) || ''),
    type: String(m.type || 'chat'), t: m.t | 0, ack: m.ack | 0,
    mimetype: String(m.mimetype || ''), size: Number(m.size || 0), notifyName: String(m.notifyName || ''),
  });
  // Not conversation: status updates, channels, and WhatsApp's system
  // messages (whatsapp-web.js v1.34.6 src/util/Constants.js MessageTypes:
  // e2e_notification, notification, notification_template, gp2,
  // group_notification, broadcast_notification, protocol, call_log).
  const SYSTEM = new Set(['e2e_notification', 'notification', 'notification_template', 'gp2', 'group_notification',
    'broadcast_notification', 'protocol', 'call_log']);
  const skipChat = id => /@(broadcast|newsletter)$/.test(id);
  const keep = m => m && m.id && !SYSTEM.has(m.type) && m.type !== 'ciphertext' && !skipChat(ser(m.id.remote));
  const chatOfMsg = m => {
    const c = mod('WAWebCollections').Chat.get(m.id.remote);
    return c ? chatOf(c) : { id: ser(m.id.remote), name: '', unread: 0, t: m.t | 0 };
  };

  let listening = false;
  function listen() {
    const { Chat, Msg } = mod('WAWebCollections');
    Msg.on('add', m => {
      if (!m.isNewMsg) return;
      // A message still encrypted gets its real type later; whatsapp-web.js
      // waits for that the same way (src/Client.js, Msg.on('add')).
      if (m.type === 'ciphertext') {
        m.once('change:type', mm => { if (keep(mm)) push({ t: 'msg', msg: msgOf(mm), chat: chatOfMsg(mm) }); });
        return;
      }
      if (keep(m)) push({ t: 'msg', msg: msgOf(m), chat: chatOfMsg(m) });
    });
    Msg.on('change:ack', m => { if (keep(m)) push({ t: 'ack', msg: msgOf(m), chat: chatOfMsg(m) }); });
    Chat.on('change:unreadCount', c => { if (!skipChat(ser(c.id))) push({ t: 'chat', chat: chatOf(c) }); });
    listening = true;
  }

  // What the slice calls (CDP Runtime.evaluate, awaitPromise).
  window.__slicehub = {
    version: VERSION,
    status() {
      const s = mod('WAWebSocketModel');
      return { version: VERSION, missing: missing(), listening, socket: s && s.Socket ? String(s.Socket.state) : '' };
    },
    chats() {
      return mod('WAWebCollections').Chat.getModelsArray().map(chatOf).filter(c => !skipChat(c.id)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    },
    async messages(chatId) {
      const chat = mod('WAWebCollections').Chat.get(chatId);
      if (!chat) return [];
      const load = mod('WAWebChatLoadMessages');
      for (let i = 0; load && i < 1000; i++) {
        const more = await load.loadEarlierMsgs(chat, chat.msgs);
        if (!more || !more.length) break;
      }
      return chat.msgs.getModelsArray().filter(keep).map(msgOf);
    },
    since(t) {
      const { Chat, Msg } = mod('WAWebCollections');
      const msgs = Msg.getModelsArray().filter(m => (m.t | 0) >= t && keep(m)).map(msgOf);
      const ids = new Set(msgs.map(m => m.chat));
      const chats = Chat.getModelsArray().filter(c => ids.has(ser(c.id)) || ((c.t | 0) >= t && !skipChat(ser(c.id)))).map(chatOf);
      return { chats, msgs };
    },
    find(ids) {
      const { Msg } = mod('WAWebCollections');
      return ids.map(id => { const m = Msg.get(id); return m ? msgOf(m) : null; });
    },
    async send(chatId, keyId, body) {
      const { Chat, Msg } = mod('WAWebCollections');
      const wid = mod('WAWebWidFactory').createWid(chatId);
      const chat = Chat.get(wid) || (await Chat.find(wid));
      if (!chat) throw new Error('no chat ' + chatId);
      const MsgKey = mod('WAWebMsgKey');
      const from = mod('WAWebUserPrefsMeUser').getMaybeMePnUser();
      const key = new MsgKey({ from, to: chat.id, id: keyId, selfDir: 'out' });
      const existing = Msg.get(key._serialized);
      if (existing) return msgOf(existing); // never twice
      const [added] = mod('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, {
        id: key, ack: 0, body, from, to: chat.id, local: true, self: 'out',
        t: Math.floor(Date.now() / 1000), isNewMsg: true, type: 'chat',
      });
      await added;
      const m = Msg.get(key._serialized);
      return m ? msgOf(m) : null;
    },
    async seen(chatId) {
      const { Chat } = mod('WAWebCollections');
      const chat = Chat.get(mod('WAWebWidFactory').createWid(chatId));
      const act = mod('WAWebUpdateUnreadChatAction');
      if (chat && act) await act.sendSeen({ chat, threadId: undefined });
      return !!chat;
    },
  };

  // The modules load with the app, after this script: look until they are
  // there, then say so once; say what is missing if they never come.
  const started = Date.now();
  (function probe() {
    const miss = missing();
    if (miss.length === 0) {
      listen();
      push({ t: 'ready', version: VERSION });
      return;
    }
    if (Date.now() - started > GIVE_UP_MS) {
      push({ t: 'missing', version: VERSION, missing: miss });
      setTimeout(probe, 5000);
      return;
    }
    setTimeout(probe, 100);
  })();
})();

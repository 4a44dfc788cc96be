// The workspace page follows /workspace/events, a server-sent event stream
// of the same status the server rendered, and redraws the parts that
// change. It builds DOM nodes with textContent only: nothing received is
// ever parsed as HTML.
(function () {
  "use strict";
  var root = document.getElementById("workspace");
  if (!root || !window.EventSource) { return; }
  var $ = function (id) { return document.getElementById(id); };

  function render(st) {
    root.dataset.phase = st.phase;
    root.dataset.whatsapp = st.whatsapp || "";
    // Waiting in line (admission control): the headline says the place.
    root.dataset.queued = st.queued || "";
    root.dataset.queuePosition = st.queue_position ? String(st.queue_position) : "";
    $("headline").textContent = st.headline || "";
    $("detail").textContent = st.detail || "";

    var steps = $("steps");
    steps.hidden = !(st.steps && st.steps.length);
    steps.replaceChildren.apply(steps, (st.steps || []).map(function (s) {
      var li = document.createElement("li");
      li.className = "step " + s.state;
      li.dataset.step = s.id;
      li.textContent = s.label;
      return li;
    }));

    var qr = $("qr"), img = $("qr-img"), count = $("qr-count");
    if (st.qr) {
      // A new code is a new URL: the browser fetches it through the proxy.
      if (img.getAttribute("src") !== st.qr.src) { img.src = st.qr.src; }
      count.dataset.seq = String(st.qr.seq);
      count.textContent = "Code " + st.qr.index + " of " + st.qr.count;
      qr.hidden = false;
    } else {
      qr.hidden = true;
    }
    // The development platform's "simulate scanning" follows the QR code.
    var scan = $("dev-scan");
    if (scan) { scan.hidden = !st.qr; }

    var app = $("app");
    if (st.app) {
      $("app-link").href = st.app;
      app.hidden = false;
    } else {
      app.hidden = true;
    }
  }

  var es = new EventSource("/workspace/events");
  var leaving = false;
  es.addEventListener("status", function (e) { render(JSON.parse(e.data)); });
  // The session ended elsewhere (another tab, a password reset, an admin).
  es.addEventListener("signed_out", function () {
    es.close();
    if (!leaving) { window.location.assign("/login?done=signed_out"); }
  });
  // A form of this page (log out) is on its way: the stream's end is
  // expected, and must not race the form's own redirect.
  document.addEventListener("submit", function () { leaving = true; es.close(); });
  es.onerror = function () {
    if (leaving) { return; }
    // The browser retries by itself after a dropped stream. It gives up
    // only when the answer was not a stream (signed out, gateway gone):
    // reload, and the server decides where this page should be.
    if (es.readyState === EventSource.CLOSED) {
      window.setTimeout(function () { window.location.reload(); }, 3000);
    }
  };
})();

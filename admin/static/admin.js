// Live panels of the admin dashboard: /admin/events pushes the panels
// re-rendered by the server (escaped by Go's html/template) whenever they
// change, and this swaps them in. Forms are outside #live, so an update
// never loses what an admin is typing. Without JavaScript the page is
// complete as served; reloading refreshes it.
(() => {
  "use strict";
  const live = document.getElementById("live");
  if (!live || !window.EventSource) return;
  const es = new EventSource(live.dataset.events);
  es.addEventListener("open", () => { live.dataset.live = "on"; });
  es.addEventListener("live", (ev) => {
    const d = JSON.parse(ev.data);
    live.innerHTML = d.html;
    live.dataset.updated = d.at;
  });
  // The browser retries a dropped stream by itself; it gives up only when
  // the answer is not a stream (the session ended, the role was removed).
  es.addEventListener("error", () => {
    if (es.readyState === EventSource.CLOSED) live.dataset.live = "lost";
  });
})();

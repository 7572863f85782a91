// keel console: live fragments over server-sent events, confirmations, small helpers.
// Written for the console (no library): the pages are rendered on the server and
// work without this script; it only makes them live and asks before destructive acts.
(function () {
  "use strict";

  var DEBOUNCE_MS = 120;
  var main = document.getElementById("main");
  var csrf = main ? main.getAttribute("data-csrf") || "" : "";

  // Confirm destructive actions: <button data-confirm="Roll back to v3?"> or <form data-confirm>.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var message = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  // Selects marked data-autosubmit submit their form on change (filters, version pickers).
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.hasAttribute && target.hasAttribute("data-autosubmit") && target.form) {
      target.form.requestSubmit();
    }
  });

  function liveParts() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live][id]"));
  }

  function topicsOf(element) {
    return (element.getAttribute("data-live") || "").split(/[\s,]+/).filter(Boolean);
  }

  function editing(element) {
    var active = document.activeElement;
    return active && element.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName) &&
      active.type !== "submit" && active.type !== "button";
  }

  var waiting = {};
  var timer = null;

  function refresh(element) {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", element.id);
    return fetch(url.toString(), {
      credentials: "same-origin",
      headers: { "X-Keel-Fragment": "1", "X-CSRF-Token": csrf },
      cache: "no-store"
    }).then(function (response) {
      if (response.status === 401) {
        window.location.reload();
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (html === null) return;
      var template = document.createElement("template");
      template.innerHTML = html.trim();
      var fresh = template.content.firstElementChild;
      var current = document.getElementById(element.id);
      if (!fresh || !current || fresh.id !== current.id) return;
      if (editing(current)) {
        waiting[current.id] = true; // swap once the operator leaves the field
        return;
      }
      keepOpen(current, fresh);
      current.replaceWith(fresh);
      document.dispatchEvent(new CustomEvent("keel:swapped", { detail: { id: fresh.id } }));
    }).catch(function () { /* the next change retries */ });
  }

  // Keep <details id=...> the operator opened open across a swap.
  function keepOpen(current, fresh) {
    current.querySelectorAll("details[id][open]").forEach(function (open) {
      var twin = fresh.querySelector("#" + CSS.escape(open.id));
      if (twin) twin.setAttribute("open", "");
    });
  }

  function schedule(topic) {
    liveParts().forEach(function (element) {
      var wanted = topicsOf(element);
      if (topic === "*" || wanted.indexOf(topic) >= 0 || wanted.indexOf("*") >= 0) {
        waiting[element.id] = true;
      }
    });
    if (timer === null) {
      timer = window.setTimeout(flush, DEBOUNCE_MS);
    }
  }

  function flush() {
    timer = null;
    Object.keys(waiting).forEach(function (id) {
      var element = document.getElementById(id);
      delete waiting[id];
      if (element) refresh(element);
    });
  }

  document.addEventListener("focusout", function () {
    if (Object.keys(waiting).length && timer === null) {
      timer = window.setTimeout(flush, DEBOUNCE_MS);
    }
  });

  function connect() {
    var topics = {};
    liveParts().forEach(function (element) {
      topicsOf(element).forEach(function (topic) { topics[topic] = true; });
    });
    var names = Object.keys(topics);
    if (!names.length || !window.EventSource) return;
    var state = document.getElementById("live-state");
    var source = new EventSource("/live?topics=" + encodeURIComponent(names.join(",")));
    source.addEventListener("hello", function (event) {
      if (state) { state.hidden = false; state.textContent = "live"; state.className = "live-state on"; }
      // A change between the page's render (or the last connection) and this one has no
      // event of its own: when the hub has moved since, refresh every live block once.
      var seen = Number(document.documentElement.getAttribute("data-revision") || 0);
      var now = seen;
      try { now = Number(JSON.parse(event.data).revision) || seen; } catch (e) { /* keep seen */ }
      if (now > seen) schedule("*");
      document.documentElement.setAttribute("data-revision", String(now));
      document.documentElement.setAttribute("data-live-ready", "1");
    });
    source.addEventListener("change", function (event) {
      try {
        var revision = Number(JSON.parse(event.data).revision);
        var seen = Number(document.documentElement.getAttribute("data-revision") || 0);
        if (revision > seen) document.documentElement.setAttribute("data-revision", String(revision));
      } catch (e) { /* ignore a malformed line */ }
    });
    source.addEventListener("change", function (event) {
      try {
        schedule(JSON.parse(event.data).topic);
      } catch (e) { /* ignore a malformed line */ }
    });
    source.onerror = function () {
      if (state) { state.hidden = false; state.textContent = "reconnecting"; state.className = "live-state off"; }
    };
  }

  connect();
})();

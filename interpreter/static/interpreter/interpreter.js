/* The interpreter's page: opens the invitation once, then follows the conversation.
 *
 * The link's secret is in the fragment (#...), which no server sees. The script takes it out
 * of the address bar at once (replaceState: no history entry), sends it over the socket in a
 * `join` frame, and keeps only the token it gets back, in sessionStorage (this tab, until it
 * closes), to reconnect with. Protocol: docs/protocol.md, "Interpreters, opening hours, return
 * codes".
 */
(function () {
  "use strict";

  var TOKEN_KEY = "interpreter-token";
  var FINISHED = 4000;
  var config = JSON.parse(document.getElementById("interpreter-config").textContent);
  var S = config.strings;

  var statusEl = document.querySelector("[data-status]");
  var chatEl = document.querySelector("[data-chat]");
  var logEl = document.querySelector("[data-log]");
  var historyEl = document.querySelector("[data-history]");
  var historyLogEl = document.querySelector("[data-history-log]");
  var typingEl = document.querySelector("[data-typing]");
  var languageEl = document.querySelector("[data-language]");
  var form = document.querySelector("[data-form]");
  var textEl = document.querySelector("[data-text]");
  var leaveButton = document.querySelector("[data-leave]");

  var socket = null;
  var key = null;
  var lastSeq = 0;
  var finished = false;
  var retry = 0;
  var pingTimer = null;
  var typingTimer = null;
  var lastTypingSent = 0;
  // Texts sent but not yet acknowledged, by client id: sent again after a reconnect.
  var outbox = {};

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }
  function setToken(value) {
    try {
      if (value) { sessionStorage.setItem(TOKEN_KEY, value); } else { sessionStorage.removeItem(TOKEN_KEY); }
    } catch (e) { /* storage off: the page still works until it is closed */ }
  }

  function say(text, final) {
    statusEl.textContent = text;
    statusEl.classList.toggle("ip-status--final", !!final);
    statusEl.hidden = !text;
  }

  function finish(text) {
    finished = true;
    setToken(null);
    chatEl.hidden = true;
    say(text, true);
    if (socket) { try { socket.close(); } catch (e) { /* already closed */ } }
  }

  function newClientId() {
    var bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // --- rendering ------------------------------------------------------------------------

  function senderLabel(from) {
    return S["from_" + from] || "";
  }

  function entryElement(frame) {
    var li = document.createElement("li");
    if (frame.event) {
      li.className = "ip-msg ip-msg--system";
      li.textContent = S["event_" + frame.event] || S.event_other;
    } else {
      li.className = "ip-msg ip-msg--" + frame.from;
      var who = document.createElement("span");
      who.className = "ip-msg__from";
      who.textContent = senderLabel(frame.from);
      li.appendChild(who);
      li.appendChild(document.createTextNode(frame.text));
    }
    if (frame.seq) { li.dataset.seq = String(frame.seq); }
    if (frame.client_id) { li.dataset.clientId = frame.client_id; }
    return li;
  }

  function addMessage(frame) {
    if (frame.seq && frame.seq <= lastSeq) { return; }
    if (frame.client_id) {
      var pending = logEl.querySelector('[data-client-id="' + frame.client_id + '"]');
      if (pending) { pending.remove(); }
    }
    logEl.appendChild(entryElement(frame));
    if (frame.seq) { lastSeq = frame.seq; }
    if (frame.from !== "interpreter") { typingEl.hidden = true; }
    logEl.lastElementChild.scrollIntoView({ block: "end" });
  }

  function showHistory(messages) {
    historyLogEl.textContent = "";
    messages.forEach(function (m) { historyLogEl.appendChild(entryElement(m)); });
    historyEl.hidden = messages.length === 0;
  }

  function showState(frame) {
    if (frame.language) {
      languageEl.textContent = S.language + " " + ((config.languages || {})[frame.language] || frame.language);
      languageEl.hidden = false;
    }
    var status = frame.status;
    if (status === "waiting") {
      say(S.waiting);
    } else if (status === "joined") {
      say(S.joined);
      chatEl.hidden = false;
    } else if (S[status]) {
      finish(S[status]);
    }
  }

  // --- the socket -----------------------------------------------------------------------

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + config.socket);
    socket.addEventListener("open", function () {
      retry = 0;
      if (key) {
        var secret = key;
        key = null; // spent whatever the answer: a link works once
        send({ type: "join", key: secret });
      } else if (token()) {
        send({ type: "resume", token: token(), last_seq: lastSeq });
      } else {
        finish(S.no_link);
        return;
      }
      Object.keys(outbox).forEach(function (id) { send(outbox[id]); });
      clearInterval(pingTimer);
      pingTimer = setInterval(function () { send({ type: "ping" }); }, 25000);
    });
    socket.addEventListener("message", function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      onFrame(frame);
    });
    socket.addEventListener("close", function (event) {
      clearInterval(pingTimer);
      if (finished || event.code === FINISHED) { return; }
      if (!token()) { return; }
      say(S.reconnecting);
      retry = Math.min(retry + 1, 6);
      setTimeout(connect, 500 * Math.pow(2, retry - 1));
    });
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "welcome":
        setToken(frame.token);
        break;
      case "state":
        showState(frame);
        break;
      case "history":
        showHistory(frame.messages || []);
        break;
      case "message":
        addMessage(frame);
        break;
      case "ack":
        delete outbox[frame.client_id];
        break;
      case "typing":
        typingEl.textContent = S["typing_" + frame.from] || "";
        typingEl.hidden = false;
        clearTimeout(typingTimer);
        typingTimer = setTimeout(function () { typingEl.hidden = true; }, 6000);
        break;
      case "error":
        onError(frame);
        break;
      default:
        break;
    }
  }

  function onError(frame) {
    var code = frame.code;
    if (["invalid_link", "link_used", "link_revoked", "link_expired", "conversation_ended",
         "invalid_token"].indexOf(code) >= 0) {
      finish(S[code]);
    } else if (frame.ref === "send") {
      say(S.send_failed);
    }
  }

  // --- the form -------------------------------------------------------------------------

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = textEl.value;
    if (!text.trim()) { return; }
    var frame = { type: "send", client_id: newClientId(), text: text };
    outbox[frame.client_id] = frame;
    var pending = entryElement({ from: "interpreter", text: text, client_id: frame.client_id });
    pending.classList.add("ip-msg--pending");
    logEl.appendChild(pending);
    send(frame);
    textEl.value = "";
    textEl.focus();
  });

  textEl.addEventListener("input", function () {
    var now = Date.now();
    if (now - lastTypingSent > 3000) {
      lastTypingSent = now;
      send({ type: "typing" });
    }
  });

  leaveButton.addEventListener("click", function () {
    if (window.confirm(S.confirm_leave)) { send({ type: "leave" }); }
  });

  // --- start ----------------------------------------------------------------------------

  if (location.hash.length > 1) {
    key = decodeURIComponent(location.hash.slice(1));
    // Out of the address bar at once; replaceState adds no history entry.
    history.replaceState(null, "", location.pathname);
  }
  // A link opened in a tab that already shows this page only changes the fragment: start over.
  window.addEventListener("hashchange", function () {
    if (location.hash.length > 1) { location.reload(); }
  });
  say(S.connecting);
  connect();
})();

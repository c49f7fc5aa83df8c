/*
 * The visitor's pages: the quick exit (every page) and the chat (the chat page).
 *
 * One file, no framework, no build step. The page hands it everything through
 * <script type="application/json" id="visitor-config"> (the CSP allows no inline script).
 *
 * Traces (issue 4, QE-10..13): the only thing ever stored on the device is the conversation's
 * token, in sessionStorage, and it is cleared at exit. No cookies written here, no
 * localStorage, IndexedDB, service worker, notifications or sounds; no history entries
 * (navigation between our pages replaces the current entry); the title never changes, except
 * to a neutral one at exit.
 */
(function () {
  "use strict";

  var configElement = document.getElementById("visitor-config");
  if (!configElement) return;
  var config = JSON.parse(configElement.textContent);
  var strings = config.strings || {};

  // --- the token: sessionStorage only, under a name that says nothing -------------------------

  var TOKEN_KEY = "s";
  var tokenStore = {
    get: function () {
      try { return window.sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
    },
    set: function (token) {
      try { window.sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* private mode */ }
    },
    remove: function () {
      try { window.sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing to do */ }
    },
    clearAll: function () {
      try { window.sessionStorage.clear(); } catch (e) { /* nothing to do */ }
      // Belt and braces: nothing of ours is ever written there.
      try { window.localStorage.clear(); } catch (e) { /* nothing to do */ }
    },
  };

  // --- quick exit (QE-1..QE-9) --------------------------------------------------------------

  function createQuickExit() {
    var exitHooks = [];
    var hideHooks = [];
    var exiting = false;
    var status = document.querySelector("[data-quick-exit-status]");
    var dots = document.querySelector("[data-quick-exit-dots]");

    // Shift three times, as GOV.UK's "Exit this page": counted on keyup, Shift on its own (not
    // as the modifier of another key), at most 5 seconds between presses; any other key starts
    // the count again. Not Escape: it is used inside chat boxes and was rejected in research.
    var SHIFT_WINDOW_MS = 5000;
    var presses = 0;
    var pressTimer = null;
    var lastKeyWasModified = false;

    function announce(text) {
      if (status) status.textContent = text || "";
    }

    function showPresses() {
      if (dots) dots.setAttribute("data-count", String(presses));
    }

    function resetPresses() {
      presses = 0;
      if (pressTimer !== null) window.clearTimeout(pressTimer);
      pressTimer = null;
      showPresses();
    }

    function onKeyUp(event) {
      if (event.key === "Shift" && !lastKeyWasModified) {
        presses += 1;
        showPresses();
        if (pressTimer !== null) window.clearTimeout(pressTimer);
        pressTimer = null;
        if (presses >= 3) {
          resetPresses();
          exit();
          return;
        }
        announce(presses === 1 ? strings.shiftTwoMore : strings.shiftOneMore);
        pressTimer = window.setTimeout(function () {
          resetPresses();
          announce(strings.shiftExpired);
        }, SHIFT_WINDOW_MS);
      } else if (presses > 0) {
        resetPresses();
        announce("");
      }
      lastKeyWasModified = event.shiftKey;
    }

    // Tell the server, in a request that outlives the page: the conversation ends as "left by
    // quick exit" and the token stops working. The CSRF token travels in the form data (the
    // cookie it matches lives only for the browser session). referrerPolicy "same-origin" keeps
    // the Origin header on this same-origin POST: under the pages' no-referrer policy some
    // browsers would send "Origin: null", which the CSRF check refuses.
    function tellServer(token) {
      var body = new FormData();
      body.append("csrfmiddlewaretoken", config.csrfToken || "");
      body.append("token", token);
      try {
        if (window.Request && "keepalive" in window.Request.prototype) {
          window.fetch(config.exitEndpoint, {
            method: "POST", body: body, keepalive: true, credentials: "same-origin",
            referrerPolicy: "same-origin", cache: "no-store",
          }).catch(function () { /* the page is gone; the socket frame may have done it */ });
        } else if (navigator.sendBeacon) {
          navigator.sendBeacon(config.exitEndpoint, body);
        }
      } catch (e) { /* never let this stop the exit */ }
    }

    function exit(event) {
      if (event) event.preventDefault();
      var token = tokenStore.get();
      if (!exiting) {
        exiting = true;
        // 1. Nothing of the page stays on screen or in the DOM (QE-5), and the tab looks like
        //    any page loading the neutral site.
        document.title = config.exitTitle || "";
        document.documentElement.classList.add("is-exiting");
        document.body.replaceChildren();
        // 2. The chat closes its socket (saying quick_exit on it first).
        exitHooks.forEach(function (hook) { try { hook(); } catch (e) { /* go on */ } });
        // 3. The server hears it even if the socket was down.
        if (token) tellServer(token);
        // 4. Nothing left on the device.
        tokenStore.clearAll();
      }
      // 5. Leave, replacing this page in the tab's history (QE-3).
      window.location.replace(config.exitUrl);
    }

    function install() {
      document.querySelectorAll("a[data-quick-exit], a[data-quick-exit-skiplink]")
        .forEach(function (link) { link.addEventListener("click", exit); });
      document.addEventListener("keyup", onKeyUp, true);
      // Back/forward cache (QE-6): a page restored from it must not show what it showed. On
      // pagehide the chat closes its socket and empties its messages; on a restore the page is
      // loaded afresh (or, after an exit, leaves again).
      window.addEventListener("pagehide", function () {
        hideHooks.forEach(function (hook) { try { hook(); } catch (e) { /* go on */ } });
      });
      window.addEventListener("pageshow", function (event) {
        if (!event.persisted) return;
        document.documentElement.classList.add("is-exiting");
        if (exiting) window.location.replace(config.exitUrl);
        else window.location.reload();
      });
    }

    return {
      install: install,
      exit: exit,
      onExit: function (hook) { exitHooks.push(hook); },
      onPageHide: function (hook) { hideHooks.push(hook); },
    };
  }

  // --- moving between our pages without adding history entries --------------------------------

  // A visit to the site stays one entry in the tab's history: each of our links replaces the
  // current page. After a quick exit, Back leads to wherever the visitor was before the site,
  // not to one of its pages. (Without JavaScript links behave as links.)
  function keepHistoryFlat() {
    document.addEventListener("click", function (event) {
      if (event.defaultPrevented || event.button !== 0) return;
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      var link = event.target.closest ? event.target.closest("a[href]") : null;
      if (!link || link.target || link.hasAttribute("download")) return;
      if (link.origin !== window.location.origin) return;
      if (link.hash && link.pathname === window.location.pathname) return;
      event.preventDefault();
      window.location.replace(link.href);
    });
  }

  // --- the chat -----------------------------------------------------------------------------

  function createChat(root, quickExit) {
    var chatConfig = config.chat || {};
    var $ = function (selector) { return root.querySelector(selector); };
    var form = $("[data-start-form]");
    var setupView = $("[data-view='setup']");
    var liveView = $("[data-view='live']");
    var messageList = $("[data-messages]");
    var typingLine = $("[data-typing]");
    var connectionLine = $("[data-connection]");
    var composer = $("[data-composer]");
    var input = $("[data-message-input]");
    var composerError = $("[data-composer-error]");
    var confirmLeave = $("[data-confirm-leave]");
    var liveActions = $("[data-live-actions]");
    var timeFormat = new Intl.DateTimeFormat(document.documentElement.lang || undefined, {
      hour: "2-digit", minute: "2-digit",
    });

    var RECONNECT_MIN_MS = 500;
    var RECONNECT_MAX_MS = 15000;
    var PING_EVERY_MS = 25000; // the server closes sockets that say nothing for 75 s
    var TYPING_EVERY_MS = 2500;
    var TYPING_SHOWN_MS = 5000;
    var ENDED = ["closed", "abandoned"];

    var state = {
      token: tokenStore.get(),
      status: null, // null while connecting; then waiting, active, closed, abandoned
      lastSeq: 0, // the highest seq received in a message frame: where a resume starts
      seen: new Set(), // seqs on screen, so nothing shows twice
      pending: new Map(), // client_id -> {text, element}: sent, not yet acknowledged
      startOptions: null, // the form's answers, until the server says "started"
      wantsToLeave: false,
      socket: null,
      attempts: 0,
      reconnectTimer: null,
      pingTimer: null,
      stopped: false, // no more reconnecting: exit, page hidden, or a new chat coming
      typingSentAt: 0,
      typingTimer: null,
    };

    // -- the socket --

    function connect() {
      if (state.socket || state.stopped) return;
      var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      var socket = new WebSocket(scheme + "//" + window.location.host + chatConfig.socketPath);
      state.socket = socket;
      socket.addEventListener("open", function () {
        if (state.socket !== socket) return;
        state.attempts = 0;
        showConnection("");
        greet();
        state.pingTimer = window.setInterval(function () { send({ type: "ping" }); }, PING_EVERY_MS);
      });
      socket.addEventListener("message", function (event) {
        if (state.socket !== socket) return;
        var frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        var handler = frame && handlers[frame.type];
        if (handler) handler(frame);
      });
      socket.addEventListener("close", function () {
        if (state.socket !== socket) return;
        state.socket = null;
        window.clearInterval(state.pingTimer);
        if (!state.stopped && !isEnded()) scheduleReconnect();
      });
    }

    function scheduleReconnect() {
      showConnection(strings.reconnecting);
      var delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * Math.pow(2, state.attempts));
      delay = delay / 2 + Math.random() * delay / 2; // spread the returns after an outage
      state.attempts += 1;
      window.clearTimeout(state.reconnectTimer);
      state.reconnectTimer = window.setTimeout(connect, delay);
    }

    function disconnect() {
      window.clearTimeout(state.reconnectTimer);
      window.clearInterval(state.pingTimer);
      var socket = state.socket;
      state.socket = null;
      if (socket) { try { socket.close(1000); } catch (e) { /* already closed */ } }
    }

    function send(frame) {
      if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return false;
      state.socket.send(JSON.stringify(frame));
      return true;
    }

    // On every (re)connection: pick the conversation up where this page left it, then send
    // again whatever was not acknowledged, with the same client ids (the server stores each
    // text once).
    function greet() {
      if (state.token) {
        send({ type: "resume", token: state.token, last_seq: state.lastSeq });
      } else if (state.startOptions) {
        send(Object.assign({ type: "start" }, state.startOptions));
      } else {
        return;
      }
      state.pending.forEach(function (entry, clientId) {
        send({ type: "send", client_id: clientId, text: entry.text });
      });
      if (state.wantsToLeave) send({ type: "leave" });
    }

    // -- incoming frames: one small function each (docs/protocol.md) --

    var handlers = {
      started: function (frame) {
        state.token = frame.token;
        state.startOptions = null;
        tokenStore.set(frame.token);
      },
      state: function (frame) {
        if (typeof frame.position === "number") showPosition(frame.position, null);
        setStatus(frame.status);
      },
      queue: function (frame) {
        showPosition(frame.position, frame.estimated_wait_seconds);
      },
      message: function (frame) {
        if (state.seen.has(frame.seq)) {
          state.lastSeq = Math.max(state.lastSeq, frame.seq);
          return;
        }
        state.seen.add(frame.seq);
        state.lastSeq = Math.max(state.lastSeq, frame.seq);
        if (frame.from === "visitor" && frame.client_id && state.pending.has(frame.client_id)) {
          confirmPending(frame.client_id, frame.seq);
          return;
        }
        if (frame.event) showEvent(frame);
        else showText(frame);
        if (frame.from !== "visitor") hideTyping();
      },
      ack: function (frame) {
        if (!state.pending.has(frame.client_id)) return;
        // The message frame with this seq may still be on its way: it is not shown again.
        // lastSeq stays: an earlier message from the other side may not have arrived yet.
        state.seen.add(frame.seq);
        confirmPending(frame.client_id, frame.seq);
      },
      typing: function (frame) {
        showTyping(frame.from);
      },
      pong: function () {},
      error: function (frame) {
        var code = frame.code;
        if (code === "invalid_token") {
          forgetConversation();
          showSetup(strings.tokenGone);
        } else if (code === "rate_limited") {
          showComposerError(strings.slowDown);
        } else if (code === "message_too_long") {
          showComposerError(strings.tooLong);
        } else if (code === "empty_message") {
          showComposerError(strings.empty);
        } else if (code === "conversation_ended") {
          failPending();
        } else if (frame.ref === "start") {
          state.startOptions = null;
          showSetup(strings.genericError);
        }
        // Others (already_started, no_conversation) are harmless echoes of a reconnection.
      },
    };

    // -- state and views --

    function isEnded() {
      return ENDED.indexOf(state.status) !== -1;
    }

    function setStatus(status) {
      var before = state.status;
      state.status = status;
      if (status === "active" || ENDED.indexOf(status) !== -1) showPosition(null, null);
      if (ENDED.indexOf(status) !== -1) {
        state.wantsToLeave = false;
        failPending();
        hideTyping();
        confirmLeave.hidden = true;
        // Nothing more will come: stop the heartbeat and let the server close the socket.
        window.clearInterval(state.pingTimer);
      }
      render();
      if (before !== status && before !== null && ENDED.indexOf(status) !== -1) {
        focus($("[data-ended-heading]"));
      }
    }

    function render() {
      var status = state.status || "connecting";
      root.querySelectorAll("[data-when]").forEach(function (element) {
        var when = element.getAttribute("data-when").split(" ");
        element.hidden = when.indexOf(status) === -1;
      });
      liveActions.hidden = !confirmLeave.hidden;
    }

    function showSetup(message) {
      liveView.hidden = true;
      setupView.hidden = false;
      var error = form.querySelector("[data-form-error]");
      error.textContent = message || "";
      error.hidden = !message;
    }

    function showLive() {
      setupView.hidden = true;
      liveView.hidden = false;
      render();
      focus($("[data-live-heading]"));
    }

    function showConnection(text) {
      connectionLine.textContent = text || "";
    }

    function showPosition(position, waitSeconds) {
      var positionLine = $("[data-queue-position]");
      var waitLine = $("[data-queue-wait]");
      if (position === null) {
        positionLine.textContent = "";
        waitLine.textContent = "";
        return;
      }
      positionLine.textContent = position <= 1
        ? strings.positionNext
        : strings.position.replace("%(position)s", String(position));
      if (typeof waitSeconds === "number") waitLine.textContent = describeWait(waitSeconds);
    }

    function describeWait(seconds) {
      for (var i = 0; i < strings.waits.length; i++) {
        var limit = strings.waits[i][0];
        if (limit === null || seconds <= limit) return strings.waits[i][1];
      }
      return "";
    }

    function focus(element) {
      if (element) element.focus({ preventScroll: false });
    }

    // -- messages --

    function senderName(from) {
      return strings[from] || strings.advisor;
    }

    function messageElement(from, text, sentAt) {
      var item = document.createElement("li");
      item.className = "message message--" + (from === "visitor" ? "mine" : "theirs");
      var who = document.createElement("span");
      who.className = "message__who";
      who.textContent = senderName(from === "visitor" ? "you" : from);
      var body = document.createElement("p");
      body.className = "message__text";
      body.textContent = text; // text, never markup
      var meta = document.createElement("span");
      meta.className = "message__meta";
      meta.textContent = sentAt ? formatTime(sentAt) : strings.sending;
      item.append(who, body, meta);
      return item;
    }

    function formatTime(iso) {
      var date = new Date(iso);
      return isNaN(date.getTime()) ? "" : timeFormat.format(date);
    }

    // Confirmed entries stay in seq order; the ones still sending come after them.
    function insertConfirmed(element) {
      var firstPending = messageList.querySelector(".message--pending");
      messageList.insertBefore(element, firstPending);
      scrollToEnd();
    }

    function showText(frame) {
      var element = messageElement(frame.from, frame.text, frame.sent_at);
      element.dataset.seq = String(frame.seq);
      insertConfirmed(element);
    }

    function showEvent(frame) {
      var text = (strings.events || {})[frame.event];
      if (!text) return; // an entry this page does not know how to tell
      var item = document.createElement("li");
      item.className = "message message--event";
      item.dataset.seq = String(frame.seq);
      item.textContent = text;
      insertConfirmed(item);
    }

    function confirmPending(clientId, seq) {
      var entry = state.pending.get(clientId);
      state.pending.delete(clientId);
      var element = entry.element;
      element.classList.remove("message--pending");
      element.dataset.seq = String(seq);
      element.querySelector(".message__meta").textContent = formatTime(new Date().toISOString());
      messageList.removeChild(element);
      insertConfirmed(element);
    }

    function failPending() {
      state.pending.forEach(function (entry) {
        entry.element.classList.remove("message--pending");
        entry.element.classList.add("message--failed");
        entry.element.querySelector(".message__meta").textContent = strings.notSent;
      });
      state.pending.clear();
    }

    function scrollToEnd() {
      var last = messageList.lastElementChild;
      if (last && last.scrollIntoView) last.scrollIntoView({ block: "nearest" });
    }

    function newClientId() {
      var bytes = new Uint8Array(12);
      window.crypto.getRandomValues(bytes);
      return Array.prototype.map.call(bytes, function (b) {
        return (b + 0x100).toString(16).slice(1);
      }).join("");
    }

    function sendText(text) {
      var clientId = newClientId();
      var element = messageElement("visitor", text, null);
      element.classList.add("message--pending");
      messageList.appendChild(element);
      scrollToEnd();
      state.pending.set(clientId, { text: text, element: element });
      // If the socket is down, greet() sends it on the next connection.
      send({ type: "send", client_id: clientId, text: text });
    }

    // -- typing --

    function showTyping(from) {
      typingLine.textContent = (strings.typing || {})[from] || "";
      window.clearTimeout(state.typingTimer);
      state.typingTimer = window.setTimeout(hideTyping, TYPING_SHOWN_MS);
    }

    function hideTyping() {
      window.clearTimeout(state.typingTimer);
      typingLine.textContent = "";
    }

    function noteTyping() {
      if (state.status !== "active") return;
      var now = Date.now();
      if (now - state.typingSentAt < TYPING_EVERY_MS) return;
      state.typingSentAt = now;
      send({ type: "typing" });
    }

    // -- starting, leaving, starting again --

    function readForm() {
      var data = new FormData(form);
      var writer = data.get("writer");
      var interpreterNeeded = data.get("interpreter_needed") === "yes";
      var interpreterLanguage = interpreterNeeded ? data.get("interpreter_language") || "" : "";
      var writerOk = setFieldError("writer", writer ? "" : strings.chooseWriter);
      var interpreterOk = setFieldError(
        "interpreter_language",
        interpreterNeeded && !interpreterLanguage ? strings.chooseInterpreterLanguage : ""
      );
      if (!writerOk) { focus(form.querySelector("input[name='writer']")); return null; }
      if (!interpreterOk) { focus(form.querySelector("[name='interpreter_language']")); return null; }
      return Object.assign({
        language: data.get("language") || chatConfig.language,
        writer: writer,
        interpreter_needed: interpreterNeeded,
        interpreter_language: interpreterLanguage,
        county: data.get("county") || "",
        safe_now: data.get("safe_now") || "",
      }, extraStartOptions(data, interpreterNeeded));
    }

    // Returns true when the field is fine.
    function setFieldError(name, message) {
      var error = form.querySelector("[data-error-for='" + name + "']");
      if (error) {
        error.textContent = message;
        error.hidden = !message;
      }
      form.querySelectorAll("[name='" + name + "']").forEach(function (field) {
        if (message) field.setAttribute("aria-invalid", "true");
        else field.removeAttribute("aria-invalid");
      });
      return !message;
    }

    function startConversation(options) {
      state.startOptions = options;
      state.stopped = false;
      state.status = null;
      showLive();
      if (state.socket && state.socket.readyState === WebSocket.OPEN) greet();
      else connect();
    }

    function leave() {
      state.wantsToLeave = true;
      confirmLeave.hidden = true;
      render();
      send({ type: "leave" });
    }

    function forgetConversation() {
      disconnect();
      tokenStore.remove();
      state.token = null;
      state.status = null;
      state.lastSeq = 0;
      state.seen.clear();
      state.pending.clear();
      state.startOptions = null;
      state.wantsToLeave = false;
      messageList.replaceChildren();
      hideTyping();
      showPosition(null, null);
      showConnection("");
    }

    function showComposerError(message) {
      composerError.textContent = message || "";
      composerError.hidden = !message;
    }

    // -- wiring --

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var options = readForm();
      if (options) startConversation(options);
    });

    form.querySelectorAll("input[name='interpreter_needed']").forEach(function (radio) {
      radio.addEventListener("change", function () {
        var needed = form.querySelector("input[name='interpreter_needed']:checked").value === "yes";
        form.querySelector("[data-interpreter-details]").hidden = !needed;
      });
    });

    // The page speaks the chosen language: changing it loads the form in that language
    // (replacing this page, so no history entry).
    var languageSelect = form.querySelector("[data-language-select]");
    languageSelect.addEventListener("change", function () {
      var option = languageSelect.options[languageSelect.selectedIndex];
      if (option && option.dataset.url && option.value !== chatConfig.language) {
        window.location.replace(option.dataset.url);
      }
    });

    composer.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = input.value;
      if (!text.trim()) { showComposerError(strings.empty); return; }
      if (text.length > chatConfig.maxLength) { showComposerError(strings.tooLong); return; }
      showComposerError("");
      input.value = "";
      sendText(text);
      input.focus();
    });

    input.addEventListener("keydown", function (event) {
      // Enter sends, Shift+Enter makes a new line; never while an input method is composing.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        composer.querySelector("button[type='submit']").click();
      }
    });
    input.addEventListener("input", noteTyping);

    root.addEventListener("click", function (event) {
      var button = event.target.closest ? event.target.closest("[data-action]") : null;
      if (!button) return;
      var action = button.getAttribute("data-action");
      if (action === "ask-leave") {
        confirmLeave.hidden = false;
        render();
        focus(confirmLeave.querySelector("[data-action='cancel-leave']"));
      } else if (action === "cancel-leave") {
        confirmLeave.hidden = true;
        render();
      } else if (action === "leave") {
        leave();
      } else if (action === "new-chat") {
        forgetConversation();
        showSetup("");
        focus($("#setup-heading"));
      }
    });

    quickExit.onExit(function () {
      state.stopped = true;
      send({ type: "quick_exit" });
      disconnect();
    });

    quickExit.onPageHide(function () {
      // Leaving the page (or going into the back/forward cache): no socket left open and no
      // message text left in the page. A restored page reloads (see pageshow).
      state.stopped = true;
      disconnect();
      messageList.replaceChildren();
    });

    // -- interpreters, opening hours, return codes (docs/protocol.md; chat/consent_and_codes.py) --

    var extra = strings.interp || {};
    var consent = $("[data-interpreter-consent]");
    var lineClosed = $("[data-line-closed]");
    var returnCode = $("[data-return-code]");
    var wantsReturnCode = false;
    Object.assign(strings.events = strings.events || {}, extra.events || {});

    // The interpreter wishes count only with an interpreter; the return code only when typed.
    function extraStartOptions(data, interpreterNeeded) {
      var options = {};
      if (interpreterNeeded) {
        options.interpreter_outside_community = data.get("interpreter_outside_community") === "yes";
        options.interpreter_gender = data.get("interpreter_gender") || "";
      }
      var code = (data.get("return_code") || "").trim();
      setFieldError("return_code", "");
      if (code) options.return_code = code;
      return options;
    }

    function formatMoment(iso) {
      var date = new Date(iso);
      if (isNaN(date.getTime())) return "";
      try {
        return new Intl.DateTimeFormat(document.documentElement.lang || undefined, {
          weekday: "long", day: "numeric", month: "long", hour: "2-digit", minute: "2-digit",
          timeZone: extra.timeZone || undefined,
        }).format(date);
      } catch (e) {
        return date.toLocaleString();
      }
    }

    function showLineClosed(frame, moveFocus) {
      var opens = lineClosed.querySelector("[data-line-opens]");
      var when = lineClosed.querySelector("[data-line-opens-at]");
      opens.hidden = !frame.opens_at;
      if (frame.opens_at) {
        when.setAttribute("datetime", frame.opens_at);
        when.textContent = formatMoment(frame.opens_at);
      }
      if (Array.isArray(frame.numbers) && frame.numbers.length) {
        var list = lineClosed.querySelector("[data-emergency-numbers]");
        list.replaceChildren.apply(list, frame.numbers.map(function (item) {
          var li = document.createElement("li");
          var link = document.createElement("a");
          link.className = "numbers__number";
          link.href = "tel:" + String(item.number).replace(/[^0-9+]/g, "");
          link.textContent = item.number;
          var label = document.createElement("span");
          label.className = "numbers__label";
          label.textContent = item.label;
          li.append(link, " ", label);
          return li;
        }));
      }
      lineClosed.hidden = false;
      if (moveFocus) focus(lineClosed.querySelector("h2"));
    }

    // Before the chat starts: is the line open for the chosen county? A short-lived socket
    // asks (the page itself is rendered without looking), and the answer shows the opening
    // hours and the numbers to call while it is closed.
    function checkLine() {
      if (state.token || !setupView || setupView.hidden) return;
      var countyField = form.querySelector("[name='county']");
      var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      var probe;
      try {
        probe = new WebSocket(scheme + "//" + window.location.host + chatConfig.socketPath);
      } catch (e) {
        return;
      }
      probe.addEventListener("open", function () {
        probe.send(JSON.stringify({
          type: "line_status", county: countyField ? countyField.value : "",
          language: chatConfig.language,
        }));
      });
      probe.addEventListener("message", function (event) {
        var frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        if (frame.type !== "line_status") return;
        if (frame.open) lineClosed.hidden = true;
        else showLineClosed(frame, false);
        probe.close(1000);
      });
    }

    function askConsent(show) {
      consent.hidden = !show;
      if (show) focus(consent.querySelector("h2"));
    }

    function showReturnCode(frame) {
      var result = returnCode.querySelector("[data-return-code-result]");
      var words = returnCode.querySelector("[data-return-code-words]");
      words.replaceChildren.apply(words, (frame.words || String(frame.code).split(" ")).map(
        function (word) {
          var span = document.createElement("span");
          span.className = "return-code__word";
          span.textContent = word;
          return span;
        }
      ));
      var expires = result.querySelector("[data-return-code-expires]");
      if (!expires) {
        expires = document.createElement("p");
        expires.setAttribute("data-return-code-expires", "");
        result.appendChild(expires);
      }
      expires.textContent = (extra.returnCodeExpires || "").replace(
        "%(date)s", formatMoment(frame.expires_at)
      );
      result.hidden = false;
      showReturnCodeError("");
    }

    function showReturnCodeError(message) {
      var error = returnCode.querySelector("[data-return-code-error]");
      error.textContent = message || "";
      error.hidden = !message;
    }

    function resetExtras() {
      askConsent(false);
      wantsReturnCode = false;
      returnCode.querySelector("[data-return-code-result]").hidden = true;
      returnCode.querySelector("[data-return-code-words]").replaceChildren();
      showReturnCodeError("");
    }

    var errors = extra.errors || {};
    var START_CODE_ERRORS = ["invalid_return_code", "return_codes_paused", "too_many_tries"];
    var baseError = handlers.error;
    var baseState = handlers.state;
    Object.assign(handlers, {
      interpreter_request: function () { askConsent(true); },
      interpreter: function () { askConsent(false); },
      return_code: showReturnCode,
      state: function (frame) {
        baseState(frame);
        if (ENDED.indexOf(frame.status) !== -1) askConsent(false);
        if (wantsReturnCode && frame.status === "closed") {
          wantsReturnCode = false;
          send({ type: "return_code" });
        }
      },
      error: function (frame) {
        if (frame.code === "line_closed") {
          state.startOptions = null;
          showSetup("");
          showLineClosed(frame, true);
        } else if (START_CODE_ERRORS.indexOf(frame.code) !== -1 && frame.ref === "start") {
          state.startOptions = null;
          showSetup("");
          var field = form.querySelector("[data-return-code-field]");
          if (field) field.open = true;
          setFieldError("return_code", errors[frame.code] || strings.genericError);
          focus(form.querySelector("[name='return_code']"));
        } else if (frame.ref === "return_code") {
          showReturnCodeError(errors[frame.code] || strings.genericError);
        } else if (frame.ref === "interpreter_answer") {
          askConsent(false);
        } else {
          baseError(frame);
        }
      },
    });

    root.addEventListener("click", function (event) {
      var button = event.target.closest ? event.target.closest("[data-action]") : null;
      if (!button) return;
      var action = button.getAttribute("data-action");
      if (action === "interpreter-yes" || action === "interpreter-no") {
        send({ type: "interpreter_answer", accept: action === "interpreter-yes" });
        askConsent(false);
        focus(input);
      } else if (action === "get-return-code") {
        // After the end the page lets its socket go; it comes back with the token (which
        // still works for a while) and asks once the server has said where things stand.
        if (!send({ type: "return_code" })) {
          wantsReturnCode = true;
          state.stopped = false;
          connect();
        }
      } else if (action === "new-chat") {
        resetExtras();
        checkLine();
      }
    });
    var countySelect = form.querySelector("[name='county']");
    if (countySelect) countySelect.addEventListener("change", checkLine);
    checkLine();

    // -- begin --

    if (state.token) {
      // A reload, or back from another of our pages: the same conversation, from the start
      // of its stream (nothing is kept on the device but the token).
      showLive();
      connect();
    } else {
      showSetup("");
    }

    return { handlers: handlers, state: state };
  }

  // --- each page ----------------------------------------------------------------------------

  var quickExit = createQuickExit();
  if (config.page === "exit") {
    // /exit/: straight on to the neutral site, leaving nothing behind.
    tokenStore.clearAll();
    window.location.replace(config.exitUrl);
    return;
  }
  quickExit.install();
  keepHistoryFlat();
  var chatRoot = document.querySelector("[data-chat]");
  if (chatRoot) createChat(chatRoot, quickExit);
})();

/*
 * The advisor console: the live queue and the advisor's own conversations, over one socket
 * (/ws/advisor/, docs/protocol.md). No framework and no build step. Everything the page shows
 * comes from the server: the words from the page's JSON (console-config, translated there),
 * the queue and the conversations from the socket. Text is only ever set with textContent.
 *
 * Robustness: the socket reconnects with backoff; after each "hello" the page sends "resume"
 * with the last sequence number it has of each conversation, and drops anything it has seen
 * (by seq). Texts the server has not acknowledged are sent again with the same client_id, which
 * the server stores once.
 */
(function () {
  "use strict";

  var configElement = document.getElementById("console-config");
  if (!configElement) {
    return;
  }
  var config = JSON.parse(configElement.textContent);
  var S = config.strings;
  var L = config.labels;

  var PING_MS = 25000;            // the server closes a socket silent for 75 s
  var TYPING_SEND_MS = 2500;      // "typing" goes out at most this often
  var TYPING_SHOW_MS = 4000;      // how long "the visitor is typing" stays without news
  var RESEND_AFTER_MS = 8000;     // an unacknowledged text is sent again after this
  var NOTICE_MS = 9000;
  var MAX_BACKOFF_MS = 30000;
  var MAX_RESUME = 100;
  var NEAR_BOTTOM_PX = 80;

  function byId(id) {
    return document.getElementById(id);
  }

  var els = {
    connection: byId("connection"),
    capacity: byId("capacity"),
    queueCount: byId("queue-count"),
    queueRows: byId("queue-rows"),
    queueTable: byId("queue-table"),
    takeNext: byId("take-next"),
    tabs: byId("conversation-tabs"),
    panes: byId("conversation-panes"),
    noConversation: byId("no-conversation"),
    notices: byId("notices"),
    announcer: byId("announcer"),
    rowTemplate: byId("queue-row-template"),
    tabTemplate: byId("tab-template"),
    paneTemplate: byId("pane-template"),
    root: byId("console"),
  };

  // The server's clock minus this browser's: waiting times are counted on the server's clock.
  var clockOffset = (config.server_now_ms || Date.now()) - Date.now();

  var state = {
    socket: null,
    ready: false,            // open and greeted ("hello" seen)
    attempt: 0,
    reconnectTimer: null,
    capacity: config.capacity,
    advisorId: config.advisor_id,
    queue: [],
    queueRows: new Map(),    // conversation id -> <tr>
    conversations: new Map(),// conversation id -> record (see createConversation)
    openId: null,
    pending: new Map(),      // client_id -> a text not yet in the stream
    inflight: [],            // client_ids sent on this socket, awaiting "ack" or "error"
    wantOpen: null,          // the conversation this page asked to take: opened when it arrives
    wantNext: false,
    lastQueueCountText: null,
    leaving: false,          // the advisor pressed "Log out"
  };

  // --- small helpers ----------------------------------------------------------------------

  function fill(template, values) {
    return String(template).replace(/\{(\w+)\}/g, function (match, key) {
      return Object.prototype.hasOwnProperty.call(values, key) ? String(values[key]) : match;
    });
  }

  function label(kind, code) {
    if (!code) {
      return S.not_given;
    }
    var names = L[kind] || {};
    return Object.prototype.hasOwnProperty.call(names, code) ? names[code] : code;
  }

  function serverNow() {
    return Date.now() + clockOffset;
  }

  function two(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function formatWaited(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) {
      return fill(S.waited_seconds, { s: seconds });
    }
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) {
      return fill(S.waited_minutes, { m: minutes, s: two(seconds % 60) });
    }
    return fill(S.waited_hours, { h: Math.floor(minutes / 60), m: two(minutes % 60) });
  }

  function clockTime(iso) {
    var date = iso ? new Date(iso) : new Date();
    if (isNaN(date.getTime())) {
      return "";
    }
    return date.toLocaleTimeString(document.documentElement.lang || undefined, {
      hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    });
  }

  function newClientId() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return (b < 16 ? "0" : "") + b.toString(16);
    }).join("");
  }

  function part(root, name) {
    return root.querySelector('[data-part="' + name + '"]');
  }

  function clone(template) {
    return template.content.firstElementChild.cloneNode(true);
  }

  // The interpreter's language and the visitor's wishes for the interpreter (when sent).
  function interpreterDetails(summary) {
    var parts = [label("interpreter_language", summary.interpreter_language)];
    if (summary.interpreter_outside_community) {
      parts.push(S.interpreter_outside_community);
    }
    if (summary.interpreter_gender) {
      parts.push(fill(S.interpreter_gender, {
        gender: label("interpreter_gender", summary.interpreter_gender).toLowerCase(),
      }));
    }
    return parts.join(", ");
  }

  // In the queue: "Interpreter: Arabic" or "No interpreter".
  function interpreterText(summary) {
    return summary.interpreter_needed
      ? fill(S.interpreter_yes, { language: interpreterDetails(summary) })
      : S.interpreter_no;
  }

  // In the open conversation's facts, under the heading "Interpreter".
  function interpreterFact(summary) {
    return summary.interpreter_needed ? interpreterDetails(summary) : S.no;
  }

  function channelText(summary) {
    var text = label("channel", summary.channel);
    // An SMS conversation may carry a masked number (e.g. "+46 70 *** ** 12").
    if (summary.contact) {
      text += " " + summary.contact;
    }
    return text;
  }

  // --- notices and announcements ------------------------------------------------------------

  function notice(text, kind) {
    var item = document.createElement("div");
    item.className = "notice-item" + (kind ? " " + kind : "");
    var words = document.createElement("p");
    words.textContent = text;
    var dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "notice-dismiss";
    dismiss.setAttribute("aria-label", S.dismiss);
    dismiss.textContent = "×";
    dismiss.addEventListener("click", function () {
      item.remove();
    });
    item.appendChild(words);
    item.appendChild(dismiss);
    els.notices.appendChild(item);
    while (els.notices.children.length > 4) {
      els.notices.firstElementChild.remove();
    }
    window.setTimeout(function () {
      item.remove();
    }, NOTICE_MS);
  }

  // A separate polite live region, so that only what is new is read out (not a whole stream
  // loaded on taking a conversation).
  function announce(text) {
    els.announcer.textContent = "";
    window.setTimeout(function () {
      els.announcer.textContent = text;
    }, 60);
  }

  function errorText(frame) {
    var key = "error_" + frame.code;
    if (Object.prototype.hasOwnProperty.call(S, key)) {
      return S[key];
    }
    return fill(S.error_other, { code: frame.code || "?", message: frame.message || "" });
  }

  // --- the socket ---------------------------------------------------------------------------

  function setConnection(which) {
    els.connection.dataset.state = which;
    els.connection.textContent = which === "connected" ? S.connected
      : which === "reconnecting" ? S.reconnecting
      : which === "ended" ? S.session_ended
      : S.connecting;
  }

  function connect() {
    window.clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    try {
      socket = new WebSocket(scheme + window.location.host + config.socket_path);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    var opened = false;
    state.socket = socket;
    state.ready = false;
    state.inflight = [];
    socket.addEventListener("open", function () {
      opened = true;
    });
    socket.addEventListener("message", function (event) {
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (state.socket === socket && frame && typeof frame.type === "string") {
        handleFrame(frame);
      }
    });
    socket.addEventListener("close", function (event) {
      if (state.socket !== socket) {
        return;
      }
      state.socket = null;
      state.ready = false;
      updateControls();
      if (state.leaving) {
        return;  // the advisor is logging out: the page is going anyway
      }
      if (event.code === 4401) {
        sessionEnded();
      } else if (!opened) {
        // Refused at the handshake: maybe the network, maybe the session has ended.
        checkSessionThenReconnect();
      } else {
        scheduleReconnect();
      }
    });
  }

  function scheduleReconnect() {
    setConnection("reconnecting");
    if (state.reconnectTimer !== null) {
      return;
    }
    var base = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, state.attempt));
    state.attempt += 1;
    var delay = base / 2 + Math.random() * base / 2;
    state.reconnectTimer = window.setTimeout(connect, delay);
  }

  function checkSessionThenReconnect() {
    window.fetch(config.console_url, {
      credentials: "same-origin", redirect: "manual", cache: "no-store",
    }).then(function (response) {
      if (response.type === "opaqueredirect" || response.status === 401 ||
          response.status === 403) {
        sessionEnded();
      } else {
        scheduleReconnect();
      }
    }).catch(function () {
      scheduleReconnect();
    });
  }

  function sessionEnded() {
    setConnection("ended");
    window.location.assign(config.login_url + "?ended=revoked");
  }

  function send(frame) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function handleFrame(frame) {
    switch (frame.type) {
      case "hello": onHello(frame); break;
      case "queue": onQueue(frame); break;
      case "conversation": onConversation(frame.conversation); break;
      case "message": onMessage(frame); break;
      case "ack": onAck(frame); break;
      case "typing": onTyping(frame); break;
      case "delivery": onDelivery(frame); break;
      case "interpreter": onInterpreter(frame); break;
      case "interpreter_link": onInterpreterLink(frame); break;
      case "note": onNote(frame); break;
      case "linked_history": onLinkedHistory(frame); break;
      case "error": onError(frame); break;
      default: break;  // "pong", and frames a newer server may add
    }
  }

  function onHello(frame) {
    state.attempt = 0;
    state.ready = true;
    if (frame.advisor && typeof frame.advisor.capacity === "number") {
      state.capacity = frame.advisor.capacity;
    }
    filters.spoken = (frame.advisor && frame.advisor.languages) || [];  // queue filters (interp)
    setConnection("connected");
    var seen = {};
    var count = 0;
    state.conversations.forEach(function (c, id) {
      if (!c.ended && count < MAX_RESUME) {
        seen[id] = c.lastSeq;
        count += 1;
      }
    });
    send({ type: "resume", conversations: seen });
    state.pending.forEach(function (p) {
      if (!p.acked && !p.failed) {
        transmit(p);
      }
    });
    updateControls();
  }

  // --- the queue ----------------------------------------------------------------------------

  function onQueue(frame) {
    state.queue = Array.isArray(frame.waiting) ? frame.waiting : [];
    // The frame lists the head of the queue; waiting_total counts everyone waiting.
    state.queueTotal = typeof frame.waiting_total === "number" ?
      Math.max(frame.waiting_total, state.queue.length) : state.queue.length;
    renderQueue();
  }

  function renderQueue() {
    var body = els.queueRows;
    var focused = document.activeElement;
    var focusedRowIndex = -1;
    var wanted = new Set(state.queue.map(function (c) { return c.id; }));
    state.queueRows.forEach(function (row, id) {
      if (!wanted.has(id)) {
        if (row.contains(focused)) {
          focusedRowIndex = Array.prototype.indexOf.call(body.children, row);
        }
        row.remove();
        state.queueRows.delete(id);
      }
    });
    state.queue.forEach(function (summary, index) {
      var row = state.queueRows.get(summary.id);
      if (!row) {
        row = clone(els.rowTemplate);
        row.dataset.id = summary.id;
        state.queueRows.set(summary.id, row);
      }
      fillQueueRow(row, summary);
      var there = body.children[index];
      if (there !== row) {
        body.insertBefore(row, there || null);
      }
    });
    // A row taken away under the advisor's focus: keep the focus in the queue.
    if (focusedRowIndex >= 0) {
      var next = body.children[Math.min(focusedRowIndex, body.children.length - 1)];
      var target = next ? next.querySelector('[data-action="take"]') : null;
      (target && !target.disabled ? target : els.takeNext).focus();
    }
    var n = state.queueTotal || state.queue.length;
    var countText = n === 0 ? S.queue_none : n === 1 ? S.queue_one : fill(S.queue_many, { n: n });
    if (n > state.queue.length) {
      countText = fill(S.queue_more, { n: n, shown: state.queue.length });
    }
    if (countText !== state.lastQueueCountText) {
      els.queueCount.textContent = countText;  // aria-live: read out only when it changes
      state.lastQueueCountText = countText;
    }
    els.queueTable.hidden = n === 0;
    applyQueueFilter();
    tickQueue();
    updateControls();
  }

  // --- queue filters (interp): by language and by interpreter need, here in the browser ---------
  // The queue frame carries every waiting conversation with its language and interpreter flags,
  // so filtering needs no round trip and the server keeps one shared queue for all advisors.

  var filters = {
    language: byId("filter-language"),
    interpreter: byId("filter-interpreter"),
    count: byId("queue-filter-count"),
    spoken: [],
  };

  function languageNeeded(summary) {
    return summary.interpreter_needed ? summary.interpreter_language : summary.language;
  }

  function passesQueueFilter(summary) {
    var language = filters.language ? filters.language.value : "";
    var need = filters.interpreter ? filters.interpreter.value : "";
    if (language && summary.language !== language &&
        !(summary.interpreter_needed && summary.interpreter_language === language)) {
      return false;
    }
    if (need === "needed" && !summary.interpreter_needed) { return false; }
    if (need === "not_needed" && summary.interpreter_needed) { return false; }
    if (need === "spoken" && filters.spoken.indexOf(languageNeeded(summary)) < 0) { return false; }
    return true;
  }

  function applyQueueFilter() {
    if (!filters || !filters.count) {
      return;
    }
    var shown = 0;
    state.queue.forEach(function (summary) {
      var row = state.queueRows.get(summary.id);
      var pass = passesQueueFilter(summary);
      if (row) { row.hidden = !pass; }
      if (pass) { shown += 1; }
    });
    var filtering = (filters.language && filters.language.value) ||
      (filters.interpreter && filters.interpreter.value);
    filters.count.hidden = !filtering || state.queue.length === 0;
    filters.count.textContent = fill(filters.count.dataset.template || "",
      { shown: shown, total: state.queue.length });
  }

  function setUpQueueFilters() {
    if (!filters.language || !filters.interpreter) {
      return;
    }
    var names = {};
    [L.language || {}, L.interpreter_language || {}].forEach(function (labels) {
      Object.keys(labels).forEach(function (code) {
        if (code && code !== "other" && !names[code]) { names[code] = labels[code]; }
      });
    });
    Object.keys(names).forEach(function (code) {
      var option = document.createElement("option");
      option.value = code;
      option.textContent = names[code];
      filters.language.appendChild(option);
    });
    filters.language.addEventListener("change", applyQueueFilter);
    filters.interpreter.addEventListener("change", applyQueueFilter);
  }

  function fillQueueRow(row, summary) {
    row.classList.toggle("urgent", !!summary.urgent);
    var cells = {};
    row.querySelectorAll("[data-cell]").forEach(function (cell) {
      cells[cell.dataset.cell] = cell;
    });
    cells.urgency.textContent = "";
    if (summary.urgent) {
      var tag = document.createElement("span");
      tag.className = "tag urgent";
      tag.textContent = S.urgent;
      cells.urgency.appendChild(tag);
    }
    cells.waited.dataset.since = summary.created_at || "";
    cells.channel.textContent = channelText(summary);
    cells.writer.textContent = label("writer", summary.writer);
    cells.language.textContent = label("language", summary.language);
    cells.interpreter.textContent = interpreterText(summary);
    cells.interpreter.classList.toggle("flag", !!summary.interpreter_needed);
    cells.county.textContent = label("county", summary.county);
    var take = row.querySelector('[data-action="take"]');
    take.dataset.id = summary.id;
    var urgent = row.querySelector('[data-action="urgent"]');
    urgent.dataset.id = summary.id;
    urgent.dataset.urgent = summary.urgent ? "false" : "true";
    urgent.textContent = summary.urgent ? S.unmark_urgent : S.mark_urgent;
  }

  function tickQueue() {
    var now = serverNow();
    els.queueRows.querySelectorAll(".waited").forEach(function (cell) {
      var since = Date.parse(cell.dataset.since);
      cell.textContent = isNaN(since) ? "" : formatWaited((now - since) / 1000);
    });
  }

  function activeCount() {
    var n = 0;
    state.conversations.forEach(function (c) {
      if (c.summary.status === "active") {
        n += 1;
      }
    });
    return n;
  }

  function updateControls() {
    var active = activeCount();
    var full = active >= state.capacity;
    var usable = state.ready;
    els.takeNext.disabled = !usable || full || state.queue.length === 0;
    els.queueRows.querySelectorAll('[data-action="take"]').forEach(function (button) {
      button.disabled = !usable || full;
    });
    els.queueRows.querySelectorAll('[data-action="urgent"]').forEach(function (button) {
      button.disabled = !usable;
    });
    var text = fill(S.capacity, { n: active, capacity: state.capacity });
    if (full) {
      text += " " + S.capacity_full;
    }
    if (els.capacity.textContent !== text) {
      els.capacity.textContent = text;
    }
    els.capacity.classList.toggle("full", full);
  }

  // --- conversations ------------------------------------------------------------------------

  function createConversation(summary) {
    var tabItem = clone(els.tabTemplate);
    var pane = clone(els.paneTemplate);
    var c = {
      id: summary.id,
      summary: summary,
      lastSeq: 0,
      ended: false,
      unread: 0,
      typingSentAt: 0,
      typingTimer: null,
      deliveries: {},
      interpreterDirty: false,
      awaitingInterpreter: false,
      invitation: null,        // the interpreter's invitation, as the server last told
      inviteLink: "",          // shown once, to this page only
      notesDirty: false,
      el: {
        tabItem: tabItem,
        tab: tabItem.querySelector(".tab"),
        pane: pane,
        title: part(pane, "title"),
        ended: part(pane, "ended"),
        stream: part(pane, "stream"),
        typing: part(pane, "typing"),
        composer: part(pane, "composer"),
        text: part(pane, "text"),
        count: part(pane, "count"),
        interpreterForm: part(pane, "interpreter-form"),
        interpreterNeeded: part(pane, "interpreter-needed"),
        interpreterLanguage: part(pane, "interpreter-language"),
        closeForm: part(pane, "close-form"),
        outcome: part(pane, "outcome"),
        dismiss: pane.querySelector('[data-action="dismiss"]'),
        inviteStatus: part(pane, "invite-status"),
        inviteLinkRow: part(pane, "invite-link-row"),
        inviteLink: part(pane, "invite-link"),
        invite: pane.querySelector('[data-action="invite"]'),
        share: pane.querySelector('[data-action="share"]'),
        revoke: pane.querySelector('[data-action="revoke"]'),
        notesForm: part(pane, "notes-form"),
        notes: part(pane, "notes"),
        notesStatus: part(pane, "notes-status"),
        earlier: part(pane, "earlier"),
        earlierContent: part(pane, "earlier-content"),
      },
    };
    c.el.tab.dataset.id = summary.id;
    pane.querySelectorAll("[data-action]").forEach(function (button) {
      button.dataset.id = summary.id;
    });
    c.el.notes.maxLength = config.max_note_length;
    pane.dataset.id = summary.id;
    c.el.text.maxLength = config.max_length;
    wirePane(c);
    els.tabs.appendChild(tabItem);
    els.panes.appendChild(pane);
    state.conversations.set(summary.id, c);
    els.noConversation.hidden = true;
    return c;
  }

  function wirePane(c) {
    c.el.composer.addEventListener("submit", function (event) {
      event.preventDefault();
      sendText(c);
    });
    c.el.text.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.ctrlKey &&
          !event.metaKey && !event.isComposing) {
        event.preventDefault();
        sendText(c);
      }
    });
    c.el.text.addEventListener("input", function () {
      updateCount(c);
      var now = Date.now();
      if (c.el.text.value.trim() && !c.ended && now - c.typingSentAt >= TYPING_SEND_MS) {
        c.typingSentAt = now;
        send({ type: "typing", conversation: c.id });
      }
    });
    c.el.interpreterNeeded.addEventListener("change", function () {
      c.interpreterDirty = true;
      c.el.interpreterLanguage.disabled = !c.el.interpreterNeeded.checked;
    });
    c.el.interpreterLanguage.addEventListener("change", function () {
      c.interpreterDirty = true;
    });
    c.el.interpreterForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var needed = c.el.interpreterNeeded.checked;
      var language = needed ? c.el.interpreterLanguage.value : "";
      if (needed && !language) {
        notice(S.choose_interpreter_language, "warning");
        c.el.interpreterLanguage.focus();
        return;
      }
      if (send({ type: "set_interpreter", conversation: c.id, needed: needed, language: language })) {
        c.interpreterDirty = false;
        c.awaitingInterpreter = true;
      }
    });
    c.el.notes.addEventListener("input", function () {
      c.notesDirty = true;
      c.el.notesStatus.textContent = S.notes_unsaved;
    });
    c.el.notesForm.addEventListener("submit", function (event) {
      event.preventDefault();
      if (send({ type: "note", conversation: c.id, text: c.el.notes.value })) {
        c.notesDirty = false;
      }
    });
    c.el.closeForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var outcome = c.el.outcome.value;
      if (!outcome) {
        notice(S.choose_outcome, "warning");
        c.el.outcome.focus();
        return;
      }
      send({ type: "close", conversation: c.id, outcome: outcome });
    });
  }

  function conversationLabel(summary) {
    return fill(S.conversation_label, {
      channel: channelText(summary),
      language: label("language", summary.language),
      time: clockTime(summary.taken_at || summary.created_at),
      // A short reference, so two conversations never look alike and colleagues can name one.
      ref: summary.id.slice(0, 4),
    });
  }

  function endedText(summary) {
    var text = fill(S.ended, { reason: label("end_reason", summary.end_reason) });
    if (summary.outcome) {
      text += " " + fill(S.outcome, { outcome: label("outcome", summary.outcome) });
    }
    return text;
  }

  function renderConversation(c) {
    var s = c.summary;
    var pane = c.el.pane;
    var conversationLabelText = conversationLabel(s);
    part(c.el.tab, "label").textContent = conversationLabelText;
    c.el.title.textContent = conversationLabelText;
    var facts = {
      channel: channelText(s),
      writer: label("writer", s.writer),
      language: label("language", s.language),
      county: label("county", s.county),
      safe_now: label("safe_now", s.safe_now),
      urgent: s.urgent ? S.urgent : S.not_urgent,
      interpreter: interpreterFact(s),
      returning: s.returning ? S.returning : "",
    };
    pane.querySelectorAll("[data-fact]").forEach(function (dd) {
      dd.textContent = facts[dd.dataset.fact] || "";
    });
    pane.classList.toggle("urgent", !!s.urgent);
    pane.querySelector('[data-fact="safe_now"]').classList.toggle("alarm", s.safe_now === "no");
    pane.classList.toggle("ended", c.ended);
    c.el.ended.hidden = !c.ended;
    c.el.ended.textContent = c.ended ? endedText(s) : "";
    part(c.el.tab, "ended").hidden = !c.ended;
    c.el.tab.classList.toggle("ended", c.ended);
    // An ended conversation stays readable but nothing more can be done in it.
    c.el.text.disabled = c.ended;
    c.el.composer.querySelector('button[type="submit"]').disabled = c.ended;
    c.el.interpreterForm.querySelectorAll("input, select, button").forEach(function (el) {
      el.disabled = c.ended;
    });
    c.el.closeForm.querySelectorAll("select, button").forEach(function (el) {
      el.disabled = c.ended;
    });
    c.el.dismiss.hidden = !c.ended;
    if (c.ended) {
      hideTyping(c);
    }
    if (!c.interpreterDirty) {
      c.el.interpreterNeeded.checked = !!s.interpreter_needed;
      c.el.interpreterLanguage.value = s.interpreter_language || "";
      c.el.interpreterLanguage.disabled = c.ended || !s.interpreter_needed;
    }
    c.el.earlier.hidden = !s.returning;
    renderInvitation(c);
    if (c.awaitingInterpreter) {
      c.awaitingInterpreter = false;
      notice(S.interpreter_saved);
    }
    updateCount(c);
  }

  function onConversation(summary) {
    if (!summary || typeof summary.id !== "string") {
      return;
    }
    var c = state.conversations.get(summary.id);
    var isNew = !c;
    if (isNew) {
      c = createConversation(summary);
    }
    var wasEnded = c.ended;
    c.summary = summary;
    c.ended = summary.status === "closed" || summary.status === "abandoned";
    renderConversation(c);
    if (isNew) {
      var askedForIt = state.wantOpen === summary.id ||
        (state.wantNext && summary.status === "active");
      if (askedForIt) {
        state.wantOpen = null;
        state.wantNext = false;
        openConversation(summary.id, true);
        announce(fill(S.taken_notice, { label: conversationLabel(summary) }));
      } else if (state.openId === null) {
        openConversation(summary.id, false);
      }
    } else if (c.ended && !wasEnded) {
      if (state.openId === c.id) {
        announce(endedText(summary));
        // The control that had the focus is switched off now: keep the keyboard in the pane.
        var focused = document.activeElement;
        if (!focused || focused === document.body || focused.disabled) {
          c.el.dismiss.focus();
        }
      } else {
        notice(conversationLabel(summary) + ": " + endedText(summary));
      }
      // Texts that never made it into an ended conversation will not.
      state.pending.forEach(function (p) {
        if (p.conversation === c.id && !p.acked) {
          failPending(p, S.error_conversation_ended);
        }
      });
    }
    updateControls();
  }

  function openConversation(id, moveFocus) {
    var c = state.conversations.get(id);
    if (!c) {
      return;
    }
    state.openId = id;
    state.conversations.forEach(function (other) {
      var isOpen = other.id === id;
      other.el.pane.hidden = !isOpen;
      if (isOpen) {
        other.el.tab.setAttribute("aria-current", "true");
      } else {
        other.el.tab.removeAttribute("aria-current");
      }
    });
    c.unread = 0;
    renderUnread(c);
    scrollToEnd(c);
    if (moveFocus) {
      (c.ended ? c.el.title : c.el.text).focus();
    }
  }

  function dismissConversation(id) {
    var c = state.conversations.get(id);
    if (!c || !c.ended) {
      return;
    }
    c.el.tabItem.remove();
    c.el.pane.remove();
    state.conversations.delete(id);
    if (state.openId === id) {
      state.openId = null;
      var first = state.conversations.keys().next();
      if (!first.done) {
        openConversation(first.value, true);
      } else {
        els.noConversation.hidden = false;
        els.takeNext.focus();
      }
    }
    updateControls();
  }

  function renderUnread(c) {
    var badge = part(c.el.tab, "unread");
    badge.hidden = c.unread === 0;
    badge.textContent = c.unread ? fill(S.unread, { n: c.unread }) : "";
  }

  function isNearEnd(c) {
    var s = c.el.stream;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToEnd(c) {
    c.el.stream.scrollTop = c.el.stream.scrollHeight;
  }

  function updateCount(c) {
    var left = config.max_length - c.el.text.value.length;
    c.el.count.textContent = left < 500 ? fill(S.characters_left, { n: left }) : "";
  }

  // --- the stream ---------------------------------------------------------------------------

  function whoText(frame) {
    if (frame.from === "advisor") {
      return frame.advisor === state.advisorId || frame.advisor === undefined
        ? S.from_you : S.from_advisor;
    }
    if (frame.from === "interpreter") {
      return S.from_interpreter;
    }
    return S.from_visitor;
  }

  function eventText(c, frame) {
    switch (frame.event) {
      case "advisor_joined":
        // The advisor a conversation is followed by is the one who took it.
        return c.summary.advisor === state.advisorId ? S.joined_you : S.joined_other;
      case "visitor_left":
        return label("end_reason", frame.data && frame.data.reason);
      case "closed":
        return S.closed_event;
      default:
        return label("event", frame.event);
    }
  }

  function buildEntry(c, frame, entry) {
    entry = entry || document.createElement("li");
    entry.textContent = "";
    entry.className = "entry from-" + (frame.from || "system");
    if (typeof frame.seq === "number") {
      entry.dataset.seq = String(frame.seq);
    }
    if (frame.event) {
      entry.classList.add("system");
      var line = document.createElement("p");
      var when = document.createElement("time");
      when.dateTime = frame.sent_at || "";
      when.textContent = clockTime(frame.sent_at);
      line.appendChild(when);
      line.appendChild(document.createTextNode(" " + eventText(c, frame)));
      entry.appendChild(line);
      return entry;
    }
    if (frame.from === "advisor" && (frame.advisor === state.advisorId || frame.advisor === undefined)) {
      entry.classList.add("mine");
    }
    var meta = document.createElement("p");
    meta.className = "meta";
    var who = document.createElement("span");
    who.className = "who";
    who.textContent = whoText(frame);
    var time = document.createElement("time");
    time.dateTime = frame.sent_at || "";
    time.textContent = clockTime(frame.sent_at);
    var delivery = document.createElement("span");
    delivery.className = "delivery";
    meta.appendChild(who);
    meta.appendChild(document.createTextNode(" "));
    meta.appendChild(time);
    meta.appendChild(document.createTextNode(" "));
    meta.appendChild(delivery);
    entry.appendChild(meta);
    if (frame.text) {
      var text = document.createElement("p");
      text.className = "text";
      text.textContent = frame.text;
      entry.appendChild(text);
    }
    var attachments = Number(frame.attachments) || 0;
    if (attachments > 0) {
      var note = document.createElement("p");
      note.className = "attachments";
      note.textContent = attachments === 1 ? S.attachments_one
        : fill(S.attachments_many, { n: attachments });
      entry.appendChild(note);
    }
    if (frame.delivery) {
      setDelivery(entry, frame.delivery, frame.delivery_error);
    }
    return entry;
  }

  function setDelivery(entry, delivery, error) {
    var mark = entry.querySelector(".delivery");
    if (!mark) {
      return;
    }
    var key = "delivery_" + delivery;
    var text = Object.prototype.hasOwnProperty.call(S, key) ? S[key] : String(delivery || "");
    if (delivery === "failed" && error) {
      text = fill(S.delivery_error, { error: error });
    }
    mark.textContent = text;
    mark.dataset.delivery = delivery || "";
  }

  function onMessage(frame) {
    var c = state.conversations.get(frame.conversation);
    if (!c || typeof frame.seq !== "number") {
      return;
    }
    var pending = frame.client_id ? state.pending.get(frame.client_id) : undefined;
    if (pending && pending.conversation !== c.id) {
      pending = undefined;
    }
    if (frame.seq <= c.lastSeq) {
      // Seen already (a resume overlaps what arrived before the drop).
      if (pending) {
        pending.el.remove();
        state.pending.delete(frame.client_id);
      }
      return;
    }
    var stickToEnd = isNearEnd(c);
    c.lastSeq = frame.seq;
    var entry;
    if (pending) {
      state.pending.delete(frame.client_id);
      entry = buildEntry(c, frame, pending.el);
    } else {
      entry = buildEntry(c, frame);
    }
    var saved = c.deliveries[frame.seq];
    if (saved) {
      setDelivery(entry, saved.delivery, saved.delivery_error);
      delete c.deliveries[frame.seq];
    }
    // In seq order, above the texts still on their way.
    var firstPending = c.el.stream.querySelector(".pending");
    c.el.stream.insertBefore(entry, firstPending);
    if (stickToEnd || pending) {
      scrollToEnd(c);
    }
    var fromOtherSide = !frame.event && frame.from !== "advisor";
    if (fromOtherSide) {
      hideTyping(c);
      if (state.openId !== c.id) {
        c.unread += 1;
        renderUnread(c);
      } else if (isRecent(frame.sent_at)) {
        announce(fill(S.new_message, { text: frame.text || "" }));
      }
    }
  }

  function isRecent(iso) {
    var sent = Date.parse(iso);
    return !isNaN(sent) && serverNow() - sent < 15000;
  }

  function onDelivery(frame) {
    var c = state.conversations.get(frame.conversation);
    if (!c || typeof frame.seq !== "number") {
      return;
    }
    var entry = c.el.stream.querySelector('[data-seq="' + frame.seq + '"]');
    if (entry) {
      setDelivery(entry, frame.delivery, frame.delivery_error);
    } else {
      c.deliveries[frame.seq] = frame;  // the message itself is still on its way
    }
  }

  function onTyping(frame) {
    var c = state.conversations.get(frame.conversation);
    if (!c || c.ended) {
      return;
    }
    c.el.typing.hidden = false;
    part(c.el.tab, "typing").hidden = false;
    window.clearTimeout(c.typingTimer);
    c.typingTimer = window.setTimeout(function () {
      hideTyping(c);
    }, TYPING_SHOW_MS);
  }

  function hideTyping(c) {
    window.clearTimeout(c.typingTimer);
    c.el.typing.hidden = true;
    part(c.el.tab, "typing").hidden = true;
  }

  // --- the interpreter's invitation, notes, the earlier conversation -------------------------

  var ACTIVE_INVITATION = ["pending", "waiting", "joined"];

  function renderInvitation(c) {
    var invitation = c.invitation;
    var status = invitation ? invitation.status : "";
    var active = ACTIVE_INVITATION.indexOf(status) >= 0;
    var text = invitation ? label("invitation_status", status) : S.no_invitation;
    if (status === "pending" && invitation.expires_at) {
      text += " " + fill(S.invitation_expires, { time: clockTime(invitation.expires_at) });
    }
    c.el.inviteStatus.textContent = text;
    c.el.inviteLinkRow.hidden = !(status === "pending" && c.inviteLink);
    c.el.inviteLink.value = c.inviteLink;
    c.el.invite.hidden = active || c.ended || c.summary.channel !== "web";
    c.el.revoke.hidden = !active || c.ended;
    c.el.share.hidden = status !== "joined" || c.ended ||
      (invitation.shared_from_seq !== null && invitation.shared_from_seq !== undefined);
  }

  function onInterpreter(frame) {
    var c = state.conversations.get(frame.conversation);
    if (!c || !frame.invitation) {
      return;
    }
    var before = c.invitation;
    c.invitation = frame.invitation;
    if (frame.invitation.status !== "pending") {
      c.inviteLink = "";  // spent or withdrawn: never shown again
    }
    if (before && before.shared_from_seq == null && frame.invitation.shared_from_seq != null) {
      notice(S.history_shared);
    }
    renderInvitation(c);
  }

  function onInterpreterLink(frame) {
    var c = state.conversations.get(frame.conversation);
    if (!c) {
      return;
    }
    c.inviteLink = frame.link || "";
    if (frame.invitation) {
      c.invitation = frame.invitation;
    }
    renderInvitation(c);
    c.el.pane.querySelector('[data-part="more"]').open = true;
    c.el.inviteLink.focus();
    c.el.inviteLink.select();
  }

  function copyLink(c) {
    var link = c.el.inviteLink.value;
    if (!link) {
      return;
    }
    var done = function () {
      notice(S.link_copied);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(link).then(done, function () {
        c.el.inviteLink.select();
      });
    } else {
      c.el.inviteLink.select();
      if (document.execCommand("copy")) {
        done();
      }
    }
  }

  function onNote(frame) {
    var c = state.conversations.get(frame.conversation);
    if (!c) {
      return;
    }
    if (!c.notesDirty) {
      c.el.notes.value = frame.text || "";
    }
    c.el.notesStatus.textContent = frame.updated_at
      ? fill(S.notes_saved, { time: clockTime(frame.updated_at) }) : "";
  }

  function onLinkedHistory(frame) {
    var c = state.conversations.get(frame.conversation);
    if (!c) {
      return;
    }
    var box = c.el.earlierContent;
    box.textContent = "";
    var earlier = Array.isArray(frame.earlier) ? frame.earlier : [];
    if (earlier.length === 0) {
      var none = document.createElement("p");
      none.textContent = S.earlier_none;
      box.appendChild(none);
      return;
    }
    earlier.forEach(function (item) {
      var section = document.createElement("section");
      section.className = "earlier-conversation";
      var heading = document.createElement("h3");
      var when = item.ended_at ? new Date(item.ended_at) : null;
      heading.textContent = fill(S.earlier_heading, {
        time: when && !isNaN(when.getTime())
          ? when.toLocaleString(document.documentElement.lang || undefined, {
            dateStyle: "medium", timeStyle: "short",
          }) : "",
      });
      section.appendChild(heading);
      if (item.summary && item.summary.outcome) {
        var outcome = document.createElement("p");
        outcome.textContent = fill(S.outcome, { outcome: label("outcome", item.summary.outcome) });
        section.appendChild(outcome);
      }
      if (item.note) {
        var note = document.createElement("p");
        note.className = "earlier-note";
        note.textContent = fill(S.earlier_note, { text: item.note });
        section.appendChild(note);
      }
      var list = document.createElement("ol");
      list.className = "stream earlier-stream";
      var past = { summary: item.summary || {} };
      (item.messages || []).forEach(function (message) {
        list.appendChild(buildEntry(past, message));
      });
      section.appendChild(list);
      box.appendChild(section);
    });
  }

  // --- sending ------------------------------------------------------------------------------

  function sendText(c) {
    if (c.ended) {
      return;
    }
    var text = c.el.text.value;
    if (!text.trim()) {
      notice(S.empty_message, "warning");
      return;
    }
    if (text.length > config.max_length) {
      notice(fill(S.message_too_long, { max: config.max_length }), "warning");
      return;
    }
    var clientId = newClientId();
    var entry = buildEntry(c, { from: "advisor", advisor: state.advisorId, text: text });
    entry.classList.add("pending");
    entry.querySelector(".delivery").textContent = S.sending;
    c.el.stream.appendChild(entry);
    var p = {
      clientId: clientId, conversation: c.id, text: text, el: entry,
      acked: false, failed: false, sentAt: 0,
    };
    state.pending.set(clientId, p);
    c.el.text.value = "";
    c.typingSentAt = 0;
    updateCount(c);
    scrollToEnd(c);
    transmit(p);
  }

  function transmit(p) {
    if (!state.ready) {
      return;  // goes out after the next "hello"
    }
    p.sentAt = Date.now();
    if (send({ type: "send", conversation: p.conversation, client_id: p.clientId, text: p.text })) {
      state.inflight.push(p.clientId);
    }
  }

  function onAck(frame) {
    var index = state.inflight.indexOf(frame.client_id);
    if (index >= 0) {
      state.inflight.splice(index, 1);
    }
    var p = state.pending.get(frame.client_id);
    if (p) {
      p.acked = true;
      p.el.querySelector(".delivery").textContent = S.sent;
    }
  }

  function failPending(p, reason) {
    p.failed = true;
    p.el.classList.add("failed");
    p.el.querySelector(".delivery").textContent = fill(S.not_sent, { reason: reason });
  }

  function resendOverdue() {
    if (!state.ready) {
      return;
    }
    var now = Date.now();
    state.pending.forEach(function (p) {
      if (!p.acked && !p.failed && p.sentAt && now - p.sentAt > RESEND_AFTER_MS) {
        transmit(p);
      }
    });
  }

  function onError(frame) {
    if (frame.ref === "send") {
      // The server answers a socket's frames in order: this is the oldest unanswered text.
      var clientId = state.inflight.shift();
      var p = clientId ? state.pending.get(clientId) : undefined;
      if (p && frame.code !== "rate_limited") {
        failPending(p, errorText(frame));
        return;
      }
    }
    if (frame.ref === "take" || frame.ref === "take_next") {
      state.wantOpen = null;
      state.wantNext = false;
    }
    if (frame.ref === "typing" || frame.ref === "ping") {
      return;  // nothing the advisor needs to act on
    }
    notice(errorText(frame), "error");
  }

  // --- the advisor's actions ----------------------------------------------------------------

  els.root.addEventListener("click", function (event) {
    var button = event.target.closest("[data-action]");
    if (!button || button.disabled) {
      return;
    }
    var id = button.dataset.id;
    switch (button.dataset.action) {
      case "take":
        if (send({ type: "take", conversation: id })) {
          state.wantOpen = id;
        }
        break;
      case "take-next":
        if (send({ type: "take_next" })) {
          state.wantNext = true;
        }
        break;
      case "urgent":
        send({ type: "mark_urgent", conversation: id, urgent: button.dataset.urgent === "true" });
        break;
      case "open":
        openConversation(id, true);
        break;
      case "dismiss":
        dismissConversation(id);
        break;
      case "invite":
        send({ type: "invite_interpreter", conversation: id });
        break;
      case "revoke":
        send({ type: "revoke_interpreter", conversation: id });
        break;
      case "share":
        send({ type: "share_with_interpreter", conversation: id, from_seq: 1 });
        break;
      case "copy-link":
        if (state.conversations.has(id)) {
          copyLink(state.conversations.get(id));
        }
        break;
      case "earlier":
        send({ type: "linked_history", conversation: id });
        break;
      default:
        break;
    }
  });

  // --- start --------------------------------------------------------------------------------

  var logoutForm = document.querySelector("form.logout");
  if (logoutForm) {
    logoutForm.addEventListener("submit", function () {
      state.leaving = true;
    });
  }
  setConnection("connecting");
  setUpQueueFilters();
  updateControls();
  renderQueue();
  connect();
  window.setInterval(tickQueue, 1000);
  window.setInterval(function () {
    send({ type: "ping" });
  }, PING_MS);
  window.setInterval(resendOverdue, 3000);
  window.addEventListener("online", function () {
    if (!state.socket) {
      window.clearTimeout(state.reconnectTimer);
      state.reconnectTimer = null;
      connect();
    }
  });
})();

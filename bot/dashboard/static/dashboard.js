/* The dashboard's only script. Vanilla, no dependencies, nothing fetched from elsewhere.
 * Patient text is only ever written with textContent, never parsed as HTML.
 *
 * Every page polls the alarm (open EMERGENCY escalations) every few seconds; the queue page
 * polls its rows too and re-renders the table. A new EMERGENCY shows the red banner, flashes
 * the tab's title and (if the nurse switched sound on) beeps.
 */
(function () {
  "use strict";

  var body = document.body;
  var pollSeconds = Math.max(2, parseInt(body.dataset.pollSeconds || "5", 10));
  var baseTitle = document.title;
  var knownEmergencies = null; // EMERGENCY ids already shown to the nurse
  var flashTimer = null;
  var audioCtx = null;
  var lastOk = null;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function localTimes(root) {
    var nodes = (root || document).querySelectorAll("time[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var d = new Date(nodes[i].getAttribute("datetime"));
      if (!isNaN(d.getTime())) nodes[i].title = d.toLocaleString();
    }
  }

  // ---------------------------------------------------------------- sound
  var soundButton = document.getElementById("sound-toggle");
  function soundWanted() { return window.localStorage.getItem("triage-sound") === "on"; }
  function audioRunning() { return !!audioCtx && audioCtx.state === "running"; }
  function showSound() {
    if (!soundButton) return;
    var on = soundWanted() && audioRunning();
    // Wanted but not yet allowed by the browser (a new page needs one click): say so.
    soundButton.textContent = on ? "Sound: on" : soundWanted() ? "Sound: click to arm"
      : "Sound: off";
    soundButton.classList.toggle("on", on);
  }
  function ensureAudio() {
    var Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    if (!audioCtx) audioCtx = new Ctx();
    if (audioCtx.state === "suspended") audioCtx.resume().then(showSound, showSound);
  }
  function beep() {
    if (!soundWanted() || !audioRunning()) return;
    for (var i = 0; i < 3; i++) {
      var osc = audioCtx.createOscillator();
      var gain = audioCtx.createGain();
      var start = audioCtx.currentTime + i * 0.3;
      osc.type = "square";
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.15, start);
      gain.gain.setValueAtTime(0, start + 0.18);
      osc.connect(gain);
      gain.connect(audioCtx.destination);
      osc.start(start);
      osc.stop(start + 0.2);
    }
  }
  if (soundButton) {
    soundButton.addEventListener("click", function (ev) {
      ev.stopPropagation();
      if (!soundWanted() || audioRunning()) {
        window.localStorage.setItem("triage-sound", soundWanted() ? "off" : "on");
      }
      if (soundWanted()) {
        ensureAudio();
        window.setTimeout(beep, 50);
      }
      showSound();
    });
    // Browsers start audio only after a gesture: the first click anywhere re-arms it.
    document.addEventListener("click", function () {
      if (soundWanted()) ensureAudio();
      showSound();
    }, { once: true });
    showSound();
  }

  // ---------------------------------------------------------------- title flash
  function startFlash(text) {
    stopFlash();
    var on = false;
    flashTimer = window.setInterval(function () {
      on = !on;
      document.title = on ? "\u26A0 " + text : baseTitle;
    }, 800);
  }
  function stopFlash() {
    if (flashTimer) window.clearInterval(flashTimer);
    flashTimer = null;
    document.title = baseTitle;
  }
  // Flashing stops once the nurse is looking at the page and touches it.
  ["click", "keydown"].forEach(function (ev) {
    document.addEventListener(ev, function () { if (!document.hidden) stopFlash(); });
  });

  // ---------------------------------------------------------------- alarm banner
  function renderAlarm(alarm) {
    var box = document.getElementById("alarm");
    if (!box) return;
    var list = document.getElementById("alarm-list");
    var title = document.getElementById("alarm-title");
    var ems = alarm.emergencies || [];
    list.replaceChildren();
    ems.forEach(function (e) {
      var a = el("a", null, e.patient + " (" + e.age + ")");
      a.href = e.url;
      a.dataset.id = e.id;
      list.appendChild(a);
    });
    title.textContent = ems.length ? ems.length + " EMERGENCY not acknowledged" : "";
    box.classList.toggle("hidden", ems.length === 0);

    var over = document.getElementById("overdue-banner");
    if (over) {
      document.getElementById("overdue-text").textContent = alarm.overdue
        ? alarm.overdue + " EMERGENCY/URGENT open past the acknowledgement deadline" : "";
      over.classList.toggle("hidden", !alarm.overdue);
    }

    var ids = ems.map(function (e) { return e.id; });
    if (knownEmergencies !== null) {
      var fresh = ems.filter(function (e) { return knownEmergencies.indexOf(e.id) < 0; });
      if (fresh.length) {
        box.classList.add("new");
        title.textContent = "NEW EMERGENCY: " + title.textContent;
        startFlash("NEW EMERGENCY: " + fresh[0].patient);
        beep();
      }
    }
    if (!ems.length) { box.classList.remove("new"); stopFlash(); }
    knownEmergencies = (knownEmergencies || []).concat(ids);
  }

  function showPoll(ok, message) {
    var status = document.getElementById("poll-status");
    if (!status) return;
    if (ok) {
      lastOk = new Date();
      status.className = "poll-status";
      status.textContent = "Live · updated " + lastOk.toLocaleTimeString();
    } else {
      status.className = "poll-status stale";
      status.replaceChildren();
      status.appendChild(el("strong", null, message + " "));
      status.appendChild(document.createTextNode(lastOk
        ? "Last update " + lastOk.toLocaleTimeString() + ". Reload the page." : ""));
      if (message.indexOf("Signed out") === 0) {
        var a = el("a", null, "Sign in again");
        a.href = "/dashboard/login";
        status.appendChild(a);
      }
    }
  }

  // ---------------------------------------------------------------- queue rows
  function badge(cls, text) { return el("span", cls, text); }

  function renderRow(row) {
    var tr = el("tr", "row tier-row-" + row.tier + " status-row-" + row.status +
                (row.overdue ? " is-overdue" : ""));
    tr.dataset.id = row.id;
    tr.dataset.tier = row.tier;
    tr.dataset.status = row.status;

    var td = el("td");
    td.appendChild(badge("tier tier-" + row.tier, row.tier));
    tr.appendChild(td);

    td = el("td");
    var t = el("time", null, row.age);
    t.setAttribute("datetime", row.created_at);
    t.dataset.age = "1";
    td.appendChild(t);
    tr.appendChild(td);

    td = el("td");
    var a = el("a", "patient", row.patient);
    a.href = row.url;
    td.appendChild(a);
    if (row.name) td.appendChild(el("div", "sub", row.phone));
    if (!row.registered) td.appendChild(badge("badge badge-unregistered", "unregistered"));
    tr.appendChild(td);

    td = el("td", null, row.checklist);
    if (row.kind === "abandoned") {
      td.appendChild(document.createTextNode(" "));
      td.appendChild(badge("badge badge-abandoned", "incomplete"));
    }
    tr.appendChild(td);

    td = el("td");
    var ul = el("ul", "reasons");
    (row.reasons || []).forEach(function (r) { ul.appendChild(el("li", null, r)); });
    td.appendChild(ul);
    tr.appendChild(td);

    td = el("td");
    td.appendChild(badge("status status-" + row.status, row.status));
    if (row.acknowledged_by) td.appendChild(el("div", "sub", "by " + row.acknowledged_by));
    tr.appendChild(td);

    td = el("td");
    if (row.overdue) {
      td.appendChild(row.status === "open" ? badge("badge badge-overdue", "OVERDUE")
        : badge("badge badge-was-overdue", "was overdue"));
    }
    if (row.page_status) {
      td.appendChild(badge("badge page-" + row.page_status, "page " + row.page_status +
                           (row.page_attempts ? " \u00D7" + row.page_attempts : "")));
    }
    if (row.page_error) td.appendChild(el("div", "page-error", row.page_error));
    tr.appendChild(td);
    return tr;
  }

  function renderQueue(payload) {
    var tbody = document.getElementById("queue-rows");
    var rows = payload.rows || [];
    var known = {};
    var oldRows = tbody.querySelectorAll("tr[data-id]");
    for (var i = 0; i < oldRows.length; i++) known[oldRows[i].dataset.id] = true;
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) {
      var tr = renderRow(row);
      if (!known[row.id]) tr.classList.add("fresh");
      fragment.appendChild(tr);
    });
    tbody.replaceChildren(fragment);
    localTimes(tbody);
    document.getElementById("count-rows").textContent = rows.length;
    document.getElementById("count-open").textContent =
      rows.filter(function (r) { return r.status === "open"; }).length;
    document.getElementById("queue-empty").classList.toggle("hidden", rows.length > 0);
  }

  // ---------------------------------------------------------------- polling
  var table = document.getElementById("queue");
  var pollUrl = table ? table.dataset.pollUrl : body.dataset.alarmUrl;

  function poll() {
    if (!pollUrl) return;
    fetch(pollUrl, { credentials: "same-origin", headers: { "Accept": "application/json" },
                     cache: "no-store" })
      .then(function (resp) {
        if (resp.status === 401) throw new Error("Signed out: the queue is NOT updating.");
        if (!resp.ok) throw new Error("The server answered " + resp.status +
                                      ": the queue is NOT updating.");
        return resp.json();
      })
      .then(function (payload) {
        if (table) renderQueue(payload);
        renderAlarm(payload.alarm || {});
        showPoll(true);
      })
      .catch(function (err) {
        showPoll(false, err && err.message && err.message.indexOf("NOT updating") >= 0
          ? err.message : "No connection: the queue is NOT updating.");
      })
      .then(function () { window.setTimeout(poll, pollSeconds * 1000); });
  }

  localTimes(document);
  if (pollUrl) {
    // What the server-rendered banner already shows counts as seen.
    var initial = document.querySelectorAll("#alarm-list a[data-id]");
    knownEmergencies = [];
    for (var j = 0; j < initial.length; j++) knownEmergencies.push(initial[j].dataset.id);
    poll();
  }
})();

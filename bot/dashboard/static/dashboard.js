/* The dashboard's only script. Vanilla, no dependencies, nothing fetched from elsewhere.
 * Patient text is only ever written with textContent, never parsed as HTML.
 *
 * Every page polls the alarm (open EMERGENCY escalations) every few seconds; the queue page
 * polls its rows too and re-renders the table, the patient page its history and texts. Times
 * come from the server, in the clinic's time zone (never the browser's). A new EMERGENCY shows the red banner, flashes
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
  // One sentence ("3 EMERGENCY waiting, oldest 6 min"), each number once: never a list.
  function renderAlarm(alarm) {
    var box = document.getElementById("alarm");
    if (!box) return;
    var title = document.getElementById("alarm-title");
    var link = document.getElementById("alarm-link");
    var count = alarm.count || 0;
    title.textContent = alarm.text || "";
    if (alarm.url) link.href = alarm.url;
    box.classList.toggle("hidden", count === 0);

    var over = document.getElementById("overdue-banner");
    if (over) {
      document.getElementById("overdue-text").textContent = alarm.overdue
        ? alarm.overdue + " EMERGENCY/URGENT open past the " +
          (body.dataset.deadlineMinutes || "15") + "-minute deadline" : "";
      over.classList.toggle("hidden", !alarm.overdue);
    }

    var ids = alarm.ids || [];
    if (knownEmergencies !== null) {
      var fresh = ids.filter(function (id) { return knownEmergencies.indexOf(id) < 0; });
      if (fresh.length) {
        box.classList.add("new");
        title.textContent = "NEW EMERGENCY: " + title.textContent;
        startFlash("NEW EMERGENCY: " + (alarm.text || ""));
        beep();
      }
    }
    if (!count) { box.classList.remove("new"); stopFlash(); }
    knownEmergencies = (knownEmergencies || []).concat(ids);
  }

  function showPoll(ok, message) {
    var status = document.getElementById("poll-status");
    if (!status) return;
    if (ok) {
      lastOk = message || "";  // the server's time, in the clinic's zone
      status.className = "poll-status";
      status.textContent = "Live \u00B7 updated " + lastOk;
    } else {
      status.className = "poll-status stale";
      status.replaceChildren();
      status.appendChild(el("strong", null, message + " "));
      status.appendChild(document.createTextNode(lastOk
        ? "Last update " + lastOk + ". Reload the page." : ""));
      if (message.indexOf("Signed out") === 0) {
        var a = el("a", null, "Sign in again");
        a.href = "/dashboard/login";
        status.appendChild(a);
      }
    }
  }

  // ---------------------------------------------------------------- queue rows
  // The same cells as the server's templates (_macros.html), built with textContent only.
  function badge(cls, text) { return el("span", cls, text); }
  function cell(cls) { return el("td", cls); }
  function telLink(href, text) { var a = el("a", "tel", text); a.href = href; return a; }

  function patientBlock(td, row) {
    var a = el("a", "patient", row.patient);
    a.href = row.url;
    td.appendChild(a);
    if (!row.registered) {
      td.appendChild(document.createTextNode(" "));
      td.appendChild(badge("badge badge-unregistered", "unregistered"));
    }
    if (row.name) {
      var sub = el("div", "sub");
      sub.appendChild(row.tel ? telLink(row.tel, row.phone) : document.createTextNode(row.phone));
      if (row.mrn) sub.appendChild(document.createTextNode(" \u00B7 " + row.mrn_text));
      td.appendChild(sub);
    } else if (row.tel) {
      var s2 = el("div", "sub");
      s2.appendChild(telLink(row.tel, "call this number"));
      td.appendChild(s2);
    }
    var bits = [row.patient_age, row.phase].concat((row.since || []).map(function (x) {
      return x.text;
    })).filter(function (x) { return x; });
    if (bits.length) td.appendChild(el("div", "facts", bits.join(" \u00B7 ")));
    if (row.caregiver) {
      var c = el("div", "caregiver", "Caregiver: " + row.caregiver);
      if (row.caregiver_tel) {
        c.appendChild(document.createTextNode(" "));
        c.appendChild(telLink(row.caregiver_tel, row.caregiver_phone));
      }
      td.appendChild(c);
    }
  }

  function words(text) { return el("q", "words", text); }

  function reasonsBlock(td, row) {
    var head = el("div", "checklist", row.checklist);
    if (row.incomplete) {
      head.appendChild(document.createTextNode(" "));
      head.appendChild(badge("badge badge-abandoned", "incomplete"));
    }
    if ((row.ids || []).length > 1) {
      head.appendChild(document.createTextNode(" "));
      head.appendChild(badge("badge badge-episode", row.ids.length + " findings"));
    }
    td.appendChild(head);
    var ul = el("ul", "reasons");
    var quoted = row.quoted || [];
    quoted.forEach(function (q) {
      var li = el("li", null, q.reason);
      if (q.words) { li.appendChild(document.createTextNode(" ")); li.appendChild(words(q.words)); }
      ul.appendChild(li);
    });
    td.appendChild(ul);
    var keys = Object.keys(row.answers || {});
    if (keys.length && !quoted.some(function (q) { return q.words; })) {
      var all = el("div", "words-all", "Their words: ");
      keys.forEach(function (k, i) {
        var span = el("span", "answer");
        span.appendChild(el("span", "qid", k.replace(/_/g, " ")));
        span.appendChild(document.createTextNode(" "));
        span.appendChild(words(row.answers[k]));
        all.appendChild(span);
        if (i < keys.length - 1) all.appendChild(document.createTextNode(", "));
      });
      td.appendChild(all);
    }
    if (row.risk_window_assumed) {
      var d = el("div");
      d.appendChild(badge("badge badge-assumed", "risk window assumed, not known"));
      td.appendChild(d);
    }
  }

  function statusBlock(td, row) {
    td.appendChild(badge("status status-" + row.status, row.status));
    if (row.acknowledged_by) td.appendChild(el("div", "sub", "by " + row.acknowledged_by));
    if (row.assigned_to) {
      var w = el("div", "assigned", "with ");
      w.appendChild(el("strong", null, row.assigned_to));
      td.appendChild(w);
    }
    if (row.calls) {
      td.appendChild(el("div", "sub calls", row.calls + " call" + (row.calls > 1 ? "s" : "") +
                        "; last: " + row.last_call));
    }
  }

  function pagingBlock(td, row) {
    if (row.overdue) {
      td.appendChild(row.status === "open" ? badge("badge badge-overdue", "OVERDUE")
        : badge("badge badge-was-overdue", "was overdue"));
    }
    if (row.page_status) {
      td.appendChild(badge("badge page-" + row.page_status, "page " + row.page_status +
                           (row.page_attempts ? " \u00D7" + row.page_attempts : "")));
    }
    if (row.page_error) td.appendChild(el("div", "page-error", row.page_error));
  }

  function rowShell(row) {
    var tr = el("tr", "row tier-row-" + row.tier + " status-row-" + row.status +
                (row.overdue ? " is-overdue" : ""));
    tr.dataset.id = row.id;
    tr.dataset.tier = row.tier;
    tr.dataset.status = row.status;
    tr.dataset.assigned = row.assigned_to || "";
    return tr;
  }

  function renderRow(row) {
    var tr = rowShell(row);
    var td = cell("c-tier");
    td.appendChild(badge("tier tier-" + row.tier, row.tier));
    tr.appendChild(td);

    td = cell("c-wait");
    var t = el("time", null, row.age);
    t.setAttribute("datetime", row.created_at);
    t.dataset.age = "1";
    t.title = "since " + row.created_local;
    td.appendChild(t);
    tr.appendChild(td);

    td = cell("c-patient"); patientBlock(td, row); tr.appendChild(td);
    td = cell("c-why"); reasonsBlock(td, row); tr.appendChild(td);
    td = cell("c-status"); statusBlock(td, row); tr.appendChild(td);
    td = cell("c-paging"); pagingBlock(td, row); tr.appendChild(td);
    return tr;
  }

  function renderHistoryRow(row) {
    var tr = rowShell(row);
    var td = cell("c-when");
    var a = el("a");
    a.href = row.url;
    var t = el("time", null, row.when);
    t.setAttribute("datetime", row.created_at);
    a.appendChild(t);
    td.appendChild(a);
    tr.appendChild(td);
    td = cell("c-tier");
    td.appendChild(badge("tier tier-" + row.tier, row.tier));
    tr.appendChild(td);
    td = cell("c-why"); reasonsBlock(td, row); tr.appendChild(td);
    td = cell("c-status"); statusBlock(td, row); tr.appendChild(td);
    return tr;
  }

  function replaceRows(tbody, rows, render) {
    var known = {};
    var oldRows = tbody.querySelectorAll("tr[data-id]");
    for (var i = 0; i < oldRows.length; i++) known[oldRows[i].dataset.id] = true;
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) {
      var tr = render(row);
      if (!known[row.id]) tr.classList.add("fresh");
      fragment.appendChild(tr);
    });
    tbody.replaceChildren(fragment);
  }

  function renderQueue(payload) {
    var rows = payload.rows || [];
    replaceRows(document.getElementById("queue-rows"), rows, renderRow);
    document.getElementById("count-rows").textContent = rows.length;
    document.getElementById("count-open").textContent =
      rows.filter(function (r) { return r.status === "open"; }).length;
    document.getElementById("queue-empty").classList.toggle("hidden", rows.length > 0);
  }

  function renderPatient(payload) {
    var rows = payload.rows || [];
    replaceRows(document.getElementById("history-rows"), rows, renderHistoryRow);
    document.getElementById("history-empty").classList.toggle("hidden", rows.length > 0);
    var list = document.getElementById("patient-texts");
    if (!list) return;
    var fragment = document.createDocumentFragment();
    (payload.texts || []).forEach(function (m) {
      var li = el("li", "msg msg-" + m.dir);
      li.appendChild(el("span", "who", m.dir === "in" ? "Patient" : "Service"));
      li.appendChild(document.createTextNode(" "));
      var t = el("time", null, m.at_local);
      t.setAttribute("datetime", m.at_iso);
      li.appendChild(t);
      li.appendChild(el("p", "text", m.text));
      fragment.appendChild(li);
    });
    if (!(payload.texts || []).length) fragment.appendChild(el("li", "empty", "No texts."));
    list.replaceChildren(fragment);
  }

  // ---------------------------------------------------------------- polling
  var table = document.getElementById("queue");
  var patientLive = document.getElementById("patient-live");
  var pollUrl = table ? table.dataset.pollUrl
    : patientLive ? patientLive.dataset.pollUrl : body.dataset.alarmUrl;

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
        if (patientLive) renderPatient(payload);
        renderAlarm(payload.alarm || {});
        showPoll(true, payload.updated || "");
      })
      .catch(function (err) {
        showPoll(false, err && err.message && err.message.indexOf("NOT updating") >= 0
          ? err.message : "No connection: the queue is NOT updating.");
      })
      .then(function () { window.setTimeout(poll, pollSeconds * 1000); });
  }

  if (pollUrl) {
    // What the server-rendered banner already shows counts as seen.
    var alarmBox = document.getElementById("alarm");
    knownEmergencies = alarmBox && alarmBox.dataset.ids
      ? alarmBox.dataset.ids.split(",").filter(function (x) { return x; }) : [];
    poll();
  }
})();

// Gantry dashboard: the live job log (ANSI colours, GitLab's collapsible
// sections, search, links to lines). Every piece of log text goes into the
// page through textContent, never innerHTML, so a log cannot inject markup.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log) return;
  var state = document.getElementById("log-state");
  var containers = [log];
  var sections = [];
  var pending = "";
  var lineNo = 0;
  var style = { b: false, i: false, u: false, fg: null, bg: null };
  var SECTION = /section_(start|end):(\d+):([^\s\[\r\x1b]+)(\[[^\]]*\])?\r?(?:\x1b\[0K)?/;

  function resetStyle() { style = { b: false, i: false, u: false, fg: null, bg: null }; }

  function sgr(params) {
    var codes = params === "" ? [0] : params.split(";").map(Number);
    for (var k = 0; k < codes.length; k++) {
      var c = codes[k];
      if (c === 0) resetStyle();
      else if (c === 1) style.b = true;
      else if (c === 3) style.i = true;
      else if (c === 4) style.u = true;
      else if (c === 22) style.b = false;
      else if (c === 23) style.i = false;
      else if (c === 24) style.u = false;
      else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) style.fg = c;
      else if (c === 39) style.fg = null;
      else if (c >= 40 && c <= 47) style.bg = c;
      else if (c === 49) style.bg = null;
      else if (c === 38 || c === 48) { k += codes[k + 1] === 5 ? 2 : 4; }
    }
  }

  function appendText(parent, text) {
    if (!text) return;
    var span = document.createElement("span");
    var cls = [];
    if (style.b) cls.push("ansi-b");
    if (style.i) cls.push("ansi-i");
    if (style.u) cls.push("ansi-u");
    if (style.fg) cls.push("fg-" + style.fg);
    if (style.bg) cls.push("bg-" + style.bg);
    if (cls.length) span.className = cls.join(" ");
    span.textContent = text;
    parent.appendChild(span);
  }

  function renderAnsi(parent, text) {
    var re = /\x1b\[([0-9;?]*)([A-Za-z])/g, last = 0, m;
    while ((m = re.exec(text)) !== null) {
      appendText(parent, text.slice(last, m.index));
      if (m[2] === "m") sgr(m[1]);
      last = re.lastIndex;
    }
    appendText(parent, text.slice(last));
  }

  function newLine(text, into) {
    lineNo += 1;
    var div = document.createElement("div");
    div.className = "line";
    div.id = "L" + lineNo;
    var a = document.createElement("a");
    a.className = "ln";
    a.href = "#L" + lineNo;
    a.textContent = String(lineNo);
    div.appendChild(a);
    var body = document.createElement("span");
    body.className = "txt";
    renderAnsi(body, text);
    div.appendChild(body);
    (into || containers[containers.length - 1]).appendChild(div);
    return div;
  }

  function visible(text) {
    // A carriage return redraws the line: keep what was drawn last.
    var t = text.replace(/\r+$/, "");
    var cr = t.lastIndexOf("\r");
    return cr >= 0 ? t.slice(cr + 1) : t;
  }

  function processLine(raw) {
    var m = SECTION.exec(raw);
    if (!m) { newLine(visible(raw)); return; }
    var before = raw.slice(0, m.index).replace(/\x1b\[0K/g, "");
    var rest = raw.slice(m.index + m[0].length);
    if (visible(before)) newLine(visible(before));
    if (m[1] === "start") {
      var details = document.createElement("details");
      details.open = !(m[4] && m[4].indexOf("collapsed=true") >= 0);
      details.dataset.section = m[3];
      var summary = document.createElement("summary");
      details.appendChild(summary);
      containers[containers.length - 1].appendChild(details);
      var head = newLine(visible(rest) || m[3], summary);
      sections.push({ name: m[3], start: Number(m[2]), head: head });
      containers.push(details);
    } else {
      for (var k = sections.length - 1; k >= 0; k--) {
        if (sections[k].name === m[3]) {
          var sec = sections[k];
          var t = document.createElement("span");
          t.className = "sec-time";
          var secs = Math.max(0, Number(m[2]) - sec.start);
          t.textContent = secs >= 60 ? Math.floor(secs / 60) + "m " + (secs % 60) + "s" : secs + "s";
          sec.head.appendChild(t);
          sections.length = k;
          containers.length = k + 1;
          break;
        }
      }
      if (visible(rest)) processLine(rest);
    }
  }

  function feed(text, flush) {
    pending += text;
    var parts = pending.split("\n");
    pending = flush ? "" : parts.pop();
    if (flush && parts.length && parts[parts.length - 1] === "") parts.pop();
    for (var k = 0; k < parts.length; k++) processLine(parts[k]);
    showTarget();
    search.run(false);
  }

  function openAncestors(el) {
    for (var p = el.parentElement; p && p !== log; p = p.parentElement) {
      if (p.tagName === "DETAILS") p.open = true;
    }
  }

  var targetShown = null;
  function showTarget() {
    var m = /^#L(\d+)$/.exec(location.hash);
    if (!m || targetShown === m[1]) return;
    var el = document.getElementById("L" + m[1]);
    if (!el) return;
    var old = log.querySelector(".line.target");
    if (old) old.classList.remove("target");
    el.classList.add("target");
    openAncestors(el);
    el.scrollIntoView({ block: "center" });
    targetShown = m[1];
  }
  window.addEventListener("hashchange", function () { targetShown = null; showTarget(); });

  var input = document.getElementById("log-search");
  var hitsOut = document.getElementById("log-hits");
  var search = {
    at: -1,
    run: function (jump) {
      if (!input) return;
      var q = input.value.toLowerCase();
      var hits = [];
      var lines = log.querySelectorAll(".line");
      for (var k = 0; k < lines.length; k++) {
        var txt = lines[k].querySelector(".txt");
        var hit = q !== "" && txt && txt.textContent.toLowerCase().indexOf(q) >= 0;
        lines[k].classList.toggle("hit", hit);
        if (hit) hits.push(lines[k]);
      }
      if (hitsOut) hitsOut.textContent = q === "" ? "" : hits.length + (hits.length === 1 ? " match" : " matches");
      if (jump && hits.length) {
        search.at = (search.at + 1) % hits.length;
        openAncestors(hits[search.at]);
        hits[search.at].scrollIntoView({ block: "center" });
      }
    }
  };
  if (input) {
    input.addEventListener("input", function () { search.at = -1; search.run(true); });
    input.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); search.run(true); } });
  }

  var es = new EventSource(log.dataset.stream);
  if (state) state.textContent = "Following the log…";
  es.addEventListener("log", function (e) { feed(JSON.parse(e.data), false); });
  es.addEventListener("end", function (e) {
    feed("", true);
    es.close();
    if (state) state.textContent = "Job " + (e.data || "finished") + ".";
    var badge = document.querySelector("[data-testid=job-status]");
    if (badge && e.data) { badge.textContent = e.data; badge.className = "badge s-" + e.data; }
    log.dataset.done = "true";
  });
  es.addEventListener("error", function () {
    if (es.readyState === EventSource.CLOSED && state) state.textContent = "Disconnected from the log.";
  });
})();

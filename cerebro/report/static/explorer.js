/* cerebro sample explorer (report.html #explorer): one table row per studied sample, sortable and filterable;
   selecting a row loads that sample's chunk of quantised maps (explorer/maps_<k>.js, a plain <script>, since
   browsers refuse fetch() of local files) and draws every method's map (explorer_draw.js). Keys: ArrowDown/j next,
   ArrowUp/k previous. Every string from the data is set as text, never parsed as HTML. */
(function () {
  "use strict";
  var D = null, chunks = {}, waiting = {}, rowEls = [], current = -1, sortCol = 0, sortDir = 1, shownCols = [];
  var metaText = [];

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(+v.toPrecision(4));
    if (Array.isArray(v)) return v.map(fmt).join(", ");
    return String(v);
  }
  function fail(text) {
    var d = $("explorer-detail");
    if (d) d.appendChild(el("p", "failed", text));
    console.error("cerebro explorer: " + text);
  }

  window.CerebroExplorer = {
    index: function (data) {
      D = data;
      if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
    },
    chunk: function (c) {
      var k = Math.floor(c.start / D.chunk);
      chunks[k] = c.samples;
      (waiting[k] || []).forEach(function (f) { f(); });
      delete waiting[k];
    }
  };

  function loadChunk(k, done) {
    if (chunks[k]) return done();
    if (waiting[k]) return waiting[k].push(done);
    waiting[k] = [done];
    var s = document.createElement("script");
    s.src = "explorer/maps_" + String(k).padStart(3, "0") + ".js";
    s.onerror = function () { delete waiting[k]; fail("could not load " + s.src + " (is the explorer folder beside the page?)"); };
    document.body.appendChild(s);
  }

  function col(key) { return D.columns.findIndex(function (c) { return c.key === key; }); }
  var WORDS = {g: "degenerate", d: "disagree", c: "not converged"};
  var KINDS = {g: "degenerate", a: "agreement", d: "disagreement", c: "convergence"};
  function rowFindings(i) {
    var seen = {};
    (D.notes[i] || []).forEach(function (n) { if (WORDS[n[0]]) seen[WORDS[n[0]]] = 1; });
    return Object.keys(seen).join(", ");
  }
  /* One finding in words: ["g", m, why] | ["a" or "d", m1, m2, spearman] | ["c", m, relative delta, tolerance]. */
  function noteText(n) {
    var name = function (k) { return D.methods[k].name; };
    if (n[0] === "g") return name(n[1]) + ": degenerate map (" + n[2] + ")";
    if (n[0] === "c") return name(n[1]) + ": not converged (|delta| " + (100 * n[2]).toPrecision(3) + "% of |f(x) - f(baseline)| > " + (100 * n[3]) + "%)";
    if (n[0] === "m") return name(n[1]) + ": map not converged (estimated error above map_tolerance at max_steps)";
    return name(n[1]) + " and " + name(n[2]) + (n[0] === "d" ? " disagree" : " agree") + " (rank correlation " +
      n[3].toFixed(2) + (n[0] === "d" ? " < " + D.disagree : "") + ")";
  }

  function init() {
    var root = $("explorer"), head = $("explorer-head"), body = $("explorer-rows");
    if (!root || !head || !body) return;
    var n = D.rows.length, idx = col("index");
    shownCols = D.columns.map(function (c, j) { return j; }).filter(function (j) {
      if (j === idx) return D.rows.some(function (r) { return r[idx] !== r[0]; });
      if (j === 0) return true;
      return D.rows.some(function (r) { return r[j] !== null && r[j] !== undefined; });
    });
    var tr = el("tr");
    shownCols.forEach(function (j) {
      var th = el("th", "", D.columns[j].label);
      th.dataset.col = j; th.title = "sort by " + D.columns[j].label;
      th.addEventListener("click", function () { sortBy(j); });
      tr.appendChild(th);
    });
    var fth = el("th", "", "findings"); fth.dataset.col = "findings"; tr.appendChild(fth);
    head.appendChild(tr);
    var metaCols = D.columns.map(function (c, j) { return c.group === "meta" ? j : -1; }).filter(function (j) { return j >= 0; });
    var frag = document.createDocumentFragment(), err = col("error");
    for (var i = 0; i < n; i++) {
      var r = D.rows[i], row = el("tr");
      row.dataset.index = r[0];
      if (typeof r[err] === "number") row.dataset.error = r[err];
      row.tabIndex = -1;
      shownCols.forEach(function (j) { row.appendChild(el("td", typeof r[j] === "number" ? "num" : "", fmt(r[j]))); });
      var f = rowFindings(i);
      row.appendChild(el("td", f ? "flagged" : "", f));
      frag.appendChild(row); rowEls.push(row);
      metaText.push(" " + metaCols.map(function (j) {
        return (D.columns[j].label + "=" + fmt(r[j])).toLowerCase();
      }).join(" ") + " ");
    }
    body.appendChild(frag);
    body.addEventListener("click", function (e) {
      var row = e.target.closest("tr[data-index]");
      if (row) select(+row.dataset.index);
    });
    controls(metaCols);
    root.addEventListener("keydown", keys);
    document.addEventListener("keydown", function (e) { if (!root.contains(e.target)) keys(e); });
    apply();
    fromHash();
    window.addEventListener("hashchange", fromHash);
  }

  function fromHash() {  /* report.html#sample=57 opens sample 57 */
    var m = /sample=(\d+)/.exec(location.hash);
    if (m && +m[1] < rowEls.length && +m[1] !== current) select(+m[1]);
  }

  function controls(metaCols) {
    ["explorer-filter", "explorer-error-min", "explorer-error-max", "explorer-class", "explorer-group"].forEach(function (id) {
      $(id).addEventListener("input", apply);
    });
    var cls = $("explorer-class"), grp = $("explorer-group"), t = col("target"), p = col("prediction");
    if (D.target_kind === "classification") {
      var classes = {};
      D.rows.forEach(function (r) { [r[t], r[p]].forEach(function (c) { if (c !== null && c !== undefined) classes[fmt(c)] = 1; }); });
      Object.keys(classes).sort(function (a, b) { return a - b || a.localeCompare(b); }).forEach(function (c) {
        var o = el("option", "", "class " + c + " (target)"); o.value = "t:" + c; cls.appendChild(o);
        o = el("option", "", "predicted " + c); o.value = "p:" + c; cls.appendChild(o);
      });
      var mis = el("option", "", "misclassified"); mis.value = "wrong"; cls.appendChild(mis);
    } else cls.hidden = true;
    metaCols.forEach(function (j) {
      var seen = {};
      D.rows.forEach(function (r) { seen[fmt(r[j])] = 1; });
      var vals = Object.keys(seen);
      if (vals.length > 50) return;
      vals.sort(function (a, b) { return a - b || a.localeCompare(b); }).forEach(function (v) {
        var o = el("option", "", D.columns[j].label + " = " + v); o.value = j + ":" + v; grp.appendChild(o);
      });
    });
    if (grp.options.length === 1) grp.hidden = true;
    if (!D.rows.some(function (r) { return typeof r[col("error")] === "number"; })) {
      $("explorer-error-min").parentNode.hidden = true; $("explorer-error-max").parentNode.hidden = true;
    }
  }

  function matches(i) {
    var r = D.rows[i], q = $("explorer-filter").value.trim().toLowerCase();
    var words = q ? q.split(/\s+/) : [];
    for (var w = 0; w < words.length; w++) {
      var t = words[w].replace(/^#/, "");
      if (!t) continue;
      if (/^-?\d+$/.test(t)) {
        if (String(r[0]) !== t && String(r[col("index")]) !== t && metaText[i].indexOf("=" + t + " ") < 0) return false;
      } else if (t.indexOf("=") > 0) {
        if (metaText[i].indexOf(" " + t + " ") < 0) return false;
      } else if (metaText[i].indexOf(t) < 0) return false;
    }
    var e = r[col("error")], lo = parseFloat($("explorer-error-min").value), hi = parseFloat($("explorer-error-max").value);
    if ((!isNaN(lo) || !isNaN(hi)) && typeof e !== "number") return false;
    if (!isNaN(lo) && e < lo) return false;
    if (!isNaN(hi) && e > hi) return false;
    var c = $("explorer-class").value;
    if (c) {
      var tv = fmt(r[col("target")]), pv = fmt(r[col("prediction")]);
      if (c === "wrong" ? tv === pv : c[0] === "t" ? tv !== c.slice(2) : pv !== c.slice(2)) return false;
    }
    var g = $("explorer-group").value;
    if (g) {
      var at = g.indexOf(":");
      if (fmt(r[+g.slice(0, at)]) !== g.slice(at + 1)) return false;
    }
    return true;
  }

  function apply() {
    var shown = 0;
    rowEls.forEach(function (row, i) { var ok = matches(i); row.hidden = !ok; shown += ok ? 1 : 0; });
    $("explorer-count").textContent = shown + " of " + rowEls.length + " samples";
  }

  function sortBy(j) {
    sortDir = sortCol === j ? -sortDir : 1; sortCol = j;
    var order = rowEls.map(function (_, i) { return i; });
    order.sort(function (a, b) {
      var x = D.rows[a][j], y = D.rows[b][j], nx = x === null || x === undefined, ny = y === null || y === undefined;
      if (nx || ny) return nx === ny ? a - b : nx ? 1 : -1;
      var c = typeof x === "number" && typeof y === "number" ? x - y : fmt(x).localeCompare(fmt(y), undefined, {numeric: true});
      return c * sortDir || a - b;
    });
    var body = $("explorer-rows"), frag = document.createDocumentFragment();
    order.forEach(function (i) { frag.appendChild(rowEls[i]); });
    body.appendChild(frag);
    document.querySelectorAll("#explorer-head th").forEach(function (th) {
      if (+th.dataset.col === j) th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
  }

  function keys(e) {
    var t = e.target, typing = t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
    var down = e.key === "ArrowDown" || (!typing && e.key === "j"), up = e.key === "ArrowUp" || (!typing && e.key === "k");
    if (!down && !up || e.altKey || e.ctrlKey || e.metaKey) return;
    if (typing && t.id !== "explorer-filter") return;
    var inside = $("explorer").contains(t);
    if (!inside && current < 0 && (e.key === "ArrowDown" || e.key === "ArrowUp")) return;  // the page still scrolls
    var rows = Array.prototype.filter.call($("explorer-rows").children, function (r) { return !r.hidden; });
    if (!rows.length) return;
    e.preventDefault();
    var at = rows.findIndex(function (r) { return +r.dataset.index === current; });
    var next = at < 0 ? (down ? 0 : rows.length - 1) : Math.max(0, Math.min(rows.length - 1, at + (down ? 1 : -1)));
    select(+rows[next].dataset.index, typing);
  }

  function select(i, keepFocus) {
    if (!(i >= 0 && i < rowEls.length)) return;
    if (current >= 0) { rowEls[current].classList.remove("selected"); rowEls[current].removeAttribute("aria-selected"); }
    current = i;
    var row = rowEls[i];
    row.classList.add("selected"); row.setAttribute("aria-selected", "true");
    if (!keepFocus) row.focus({preventScroll: true});
    row.scrollIntoView({block: "nearest"});
    if (history.replaceState) history.replaceState(null, "", "#sample=" + i);
    detail(i);
  }

  function detail(i) {
    var d = $("explorer-detail"), r = D.rows[i];
    d.textContent = "";
    d.dataset.index = i;
    d.appendChild(el("h3", "", "sample #" + i + (r[1] !== i ? " (index " + r[1] + " in the data)" : "")));
    var facts = el("div", "ex-facts");
    D.columns.forEach(function (c, j) {
      if (j < 2 || r[j] === null || r[j] === undefined) return;
      var f = el("span"); f.appendChild(el("b", "", c.label + ": ")); f.appendChild(document.createTextNode(fmt(r[j])));
      facts.appendChild(f);
    });
    d.appendChild(facts);
    var notes = el("ul", "ex-notes");
    (D.notes[i] || []).forEach(function (n) { notes.appendChild(el("li", KINDS[n[0]], noteText(n))); });
    D.methods.forEach(function (m) { if (m.untrusted) notes.appendChild(el("li", "untrusted", m.name + ": do not read this map (" + m.untrusted + ")")); });
    if (!notes.children.length) notes.appendChild(el("li", "", "no findings on this sample"));
    d.appendChild(notes);
    var maps = el("div", "ex-maps"), status = el("p", "ex-hint", "loading maps...");
    d.appendChild(status); d.appendChild(maps);
    var k = Math.floor(i / D.chunk);
    loadChunk(k, function () {
      if (current !== i) return;
      status.remove();
      draw(maps, chunks[k][i - k * D.chunk], d.clientWidth || 900);
    });
  }

  function draw(box, s, width) {
    var C = window.CerebroDraw, shape = D.input_shape, w = Math.max(280, Math.min(width - 4, 1150));
    var x = null;
    if (s.x) {
      var q = C.bytes(s.x);
      x = shape.length === 3 ? q : Array.from(q, function (c) { return s.lo + c / 255 * (s.hi - s.lo); });
    }
    var vals = {};
    D.methods.forEach(function (m) { vals[m.name] = C.values(s.maps[m.name]); });
    var rows = shape.length === 2 ? C.shownRows(shape[0], shape[1], D.methods.filter(function (m) { return m.kind === "signal"; }).map(function (m) { return vals[m.name]; }), x) : null;
    var imageSize = Math.min(260, Math.floor((w - 40) / Math.min(4, D.methods.length + 1)));
    if (D.methods.some(function (m) { return m.kind === "image"; }) && x) {
      box.appendChild(figure(null, C.input({shape: shape}, x, imageSize), "input", ""));
    }
    D.methods.forEach(function (m) {
      var v = vals[m.name], entry = s.maps[m.name], canvas, bad = (D.notes[current] || []).filter(function (n) { return n[0] === "g" && D.methods[n[1]] === m; })[0];
      try {
        if (bad) canvas = C.note(noteText(bad), w);
        else if (m.kind === "signal") canvas = C.signal({shape: shape, names: D.channel_names, sfreq: D.sfreq}, x, v, rows, w);
        else if (m.kind === "image") canvas = C.image({shape: shape}, x, v, imageSize);
        else if (m.kind === "tokens") canvas = C.tokens({words: D.words}, s.ids, v, w);
        else if (m.kind === "spectral" || m.kind === "heatmap") {
          var dims = entry[2].filter(function (n) { return n > 1; }), cols = dims[dims.length - 1] || 1;
          canvas = C.heatmap({names: D.channel_names, frequencies: m.kind === "spectral" ? m.frequencies : null}, v, v.length / cols, cols, w);
        } else canvas = C.bars(v, w);
      } catch (err) {
        canvas = C.note("could not draw " + m.name + ": " + err.message, w);
        console.error("cerebro explorer: drawing " + m.name + ": " + err);
      }
      var what = {signal: "channel x time, |attribution| behind the traces", image: "blended heat map, |attribution|",
                  tokens: "tokens coloured by attribution (red +, blue -)", spectral: "channel x frequency, |attribution|",
                  heatmap: "|attribution|", bars: "|attribution| per feature"}[m.kind];
      if (m.kind === "signal" && v.length !== shape[0] * shape[1]) what = "time-only layer map, a band behind every channel";
      if (m.kind === "signal" && rows && rows.length < shape[0]) what += "; the " + rows.length + " of " + shape[0] + " channels with the most attribution";
      box.appendChild(figure(m.name, canvas, what + " (max |value| " + fmt(entry[1]) + ")",
                             m.untrusted ? "do not read: " + m.untrusted : "", m.kind !== "image"));
    });
  }

  function figure(method, canvas, caption, warn, wide) {
    var f = el("figure", wide ? "wide" : "");
    if (method) f.dataset.method = method;
    f.appendChild(canvas);
    var cap = el("figcaption");
    if (method) cap.appendChild(el("b", "", method + " "));
    if (warn) cap.appendChild(el("span", "warn", warn + " "));
    cap.appendChild(document.createTextNode(caption));
    f.appendChild(cap);
    return f;
  }
})();

/* cerebro sample explorer: drawing one sample's maps on <canvas>, the way the report's worst-case gallery draws
   them (EEG/signals: traces over a channel x time map in seconds; images: Captum's blended heat map; token ids:
   coloured tokens; spectra: channel x frequency). Maps arrive as uint8 codes: 128 = 0, 1..255 = -scale..+scale,
   0 = not finite. No network, no eval: plain functions on window.CerebroDraw. */
(function () {
  "use strict";
  var REDS = [[255, 245, 240], [252, 187, 161], [251, 106, 74], [203, 24, 29], [103, 0, 13]];
  var BLUES = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  var MAGMA = [[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]];

  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, t || 0)) * (stops.length - 1);
    var i = Math.min(stops.length - 2, Math.floor(t)), f = t - i, a = stops[i], b = stops[i + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  }

  function bytes(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  /* Decoded map: signed values (NaN where not finite). */
  function values(entry) {
    var q = bytes(entry[0]), scale = entry[1], v = new Float64Array(q.length);
    for (var i = 0; i < q.length; i++) v[i] = q[i] === 0 ? NaN : (q[i] - 128) / 127 * scale;
    return v;
  }

  function canvas(w, h) {
    var c = document.createElement("canvas"), r = window.devicePixelRatio || 1;
    c.width = Math.round(w * r); c.height = Math.round(h * r);
    c.style.width = w + "px"; c.style.height = h + "px";
    var g = c.getContext("2d");
    g.scale(r, r); g.fillStyle = "#fff"; g.fillRect(0, 0, w, h);
    g.font = "11px system-ui, sans-serif"; g.textBaseline = "middle";
    return {el: c, g: g, w: w, h: h};
  }

  function note(text, w) {
    var c = canvas(Math.min(w, 520), 40);
    c.g.fillStyle = "#b00020"; c.g.textAlign = "center"; c.g.fillText(text, c.w / 2, 20);
    return c.el;
  }

  /* An RGB image of w x h cells, drawn scaled (nearest) into the box. */
  function cells(c, w, h, rgbAt, x0, y0, bw, bh) {
    var off = document.createElement("canvas"); off.width = w; off.height = h;
    var og = off.getContext("2d"), img = og.createImageData(w, h);
    for (var y = 0; y < h; y++) for (var x = 0; x < w; x++) {
      var p = rgbAt(x, y), k = 4 * (y * w + x);
      img.data[k] = p[0]; img.data[k + 1] = p[1]; img.data[k + 2] = p[2]; img.data[k + 3] = 255;
    }
    og.putImageData(img, 0, 0);
    c.g.imageSmoothingEnabled = false;
    c.g.drawImage(off, x0, y0, bw, bh);
  }

  function ticks(lo, hi, n) {
    var span = hi - lo; if (!(span > 0)) return [lo];
    var step = Math.pow(10, Math.floor(Math.log10(span / n))), err = span / n / step;
    step *= err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step) out.push(+t.toFixed(10));
    return out;
  }

  function xAxis(c, x0, y, bw, lo, hi, label) {
    var g = c.g; g.fillStyle = "#222"; g.textAlign = "center"; g.strokeStyle = "#666";
    ticks(lo, hi, Math.max(2, Math.floor(bw / 80))).forEach(function (t) {
      var px = x0 + (t - lo) / (hi - lo || 1) * bw;
      g.beginPath(); g.moveTo(px, y); g.lineTo(px, y + 4); g.stroke(); g.fillText(String(t), px, y + 11);
    });
    g.fillText(label, x0 + bw / 2, y + 25);
  }

  function absMax(v, pick) {
    var m = 0;
    for (var i = 0; i < v.length; i++) if ((!pick || pick(i)) && Math.abs(v[i]) > m) m = Math.abs(v[i]);
    return m;
  }

  /* Signals (C, T): the channels' traces over |map| (Reds); a time-only map is a band behind every channel. */
  function signal(opt, x, v, rows, w) {
    var C = opt.shape[0], T = opt.shape[1], full = v.length === C * T, n = rows.length;
    var rh = Math.max(13, Math.min(26, Math.floor(360 / n))), left = 64, top = 6, bottom = 34;
    var c = canvas(w, top + n * rh + bottom), bw = w - left - 8, bh = n * rh;
    var amax = absMax(v, full ? function (i) { return rows.indexOf(Math.floor(i / T)) >= 0; } : null) || 1;
    cells(c, T, n, function (t, r) {
      var a = Math.abs(full ? v[rows[r] * T + t] : v[t]);
      return isNaN(a) ? [200, 200, 200] : ramp(REDS, a / amax);
    }, left, top, bw, bh);
    var xmax = 0;
    rows.forEach(function (r) { for (var t = 0; t < T; t++) xmax = Math.max(xmax, Math.abs(x[r * T + t])); });
    xmax = xmax || 1;
    var g = c.g; g.strokeStyle = "#1a1a1a"; g.lineWidth = 0.7; g.textAlign = "right"; g.fillStyle = "#222";
    rows.forEach(function (r, k) {
      var mid = top + (k + 0.5) * rh;
      g.beginPath();
      for (var t = 0; t < T; t++) {
        var px = left + (t + 0.5) / T * bw, py = mid - 0.45 * rh * x[r * T + t] / xmax;
        if (t) g.lineTo(px, py); else g.moveTo(px, py);
      }
      g.stroke();
      g.fillText(opt.names ? String(opt.names[r]) : String(r), left - 4, mid);
    });
    var sf = opt.sfreq;
    xAxis(c, left, top + bh + 2, bw, 0, sf ? (T - 1) / sf : T - 1, sf ? "time (s)" : "time (samples)");
    return c.el;
  }

  /* Captum's blended heat map (sign absolute_value): |sum over channels|, scaled to the value where the
     cumulative sum reaches 98% (outlier_perc 2), in Blues at alpha 0.5 over the grayscale input. */
  function image(opt, x, v, size) {
    var C = opt.shape[0], H = opt.shape[1], W = opt.shape[2], k = v.length / (H * W), a = new Float64Array(H * W);
    for (var i = 0; i < H * W; i++) {
      var s = 0;
      for (var ch = 0; ch < k; ch++) s += v[ch * H * W + i] || 0;
      a[i] = Math.abs(s);
    }
    var sorted = Array.prototype.slice.call(a).sort(function (p, q) { return p - q; }), total = 0, thr = 0;
    sorted.forEach(function (s) { total += s; });
    for (var j = 0, acc = 0; j < sorted.length; j++) { acc += sorted[j]; if (acc >= 0.98 * total) { thr = sorted[j]; break; } }
    thr = thr || sorted[sorted.length - 1] || 1;
    var c = canvas(size, Math.round(size * H / W));
    cells(c, W, H, function (px, py) {
      var gray = 0;
      for (var ch = 0; ch < C; ch++) gray += x[ch * H * W + py * W + px];
      gray = gray / C;
      var b = ramp(BLUES, a[py * W + px] / thr);
      return [0.5 * gray + 0.5 * b[0], 0.5 * gray + 0.5 * b[1], 0.5 * gray + 0.5 * b[2]];
    }, 0, 0, c.w, c.h);
    return c.el;
  }

  function input(opt, x, size) {
    var C = opt.shape[0], H = opt.shape[1], W = opt.shape[2], c = canvas(size, Math.round(size * H / W));
    cells(c, W, H, function (px, py) {
      var i = py * W + px;
      return C === 3 ? [x[i], x[H * W + i], x[2 * H * W + i]] : [x[i], x[i], x[i]];
    }, 0, 0, c.w, c.h);
    return c.el;
  }

  /* Token ids, each in a box coloured by its attribution (red positive, blue negative), wrapped in lines. */
  function tokens(opt, ids, v, w) {
    var amax = absMax(v) || 1, g0 = canvas(1, 1).g, pad = 6, lh = 24, x = pad, y = pad, boxes = [];
    g0.font = "13px ui-monospace, monospace";
    ids.forEach(function (id, i) {
      var word = opt.words ? String(opt.words[id]) : String(id), tw = g0.measureText(word).width + 10;
      if (x + tw > w - pad && x > pad) { x = pad; y += lh; }
      boxes.push([x, y, tw, word, v[i]]); x += tw + 4;
    });
    var c = canvas(w, y + lh + pad), g = c.g;
    g.font = "13px ui-monospace, monospace"; g.textAlign = "center";
    boxes.forEach(function (b) {
      var t = Math.abs(b[4]) / amax, rgb = isNaN(b[4]) ? [200, 200, 200] : b[4] >= 0 ? [214, 39, 40] : [31, 119, 180];
      g.fillStyle = "rgba(" + rgb.join(",") + "," + (isNaN(b[4]) ? 1 : 0.08 + 0.8 * t).toFixed(3) + ")";
      g.fillRect(b[0], b[1], b[2], lh - 4);
      g.strokeStyle = "#bbb"; g.strokeRect(b[0], b[1], b[2], lh - 4);
      g.fillStyle = t > 0.6 ? "#fff" : "#111"; g.fillText(b[3], b[0] + b[2] / 2, b[1] + (lh - 4) / 2);
    });
    return c.el;
  }

  /* Any 2-D map (rows x columns) as |value| in magma: channel x frequency for spectral maps (Hz ticks). */
  function heatmap(opt, v, rowsN, colsN, w) {
    var left = 64, top = 6, bottom = 34, rh = Math.max(4, Math.min(18, Math.floor(320 / rowsN)));
    var c = canvas(w, top + rowsN * rh + bottom), bw = w - left - 8, bh = rowsN * rh, amax = absMax(v) || 1;
    cells(c, colsN, rowsN, function (col, row) {
      var a = Math.abs(v[row * colsN + col]);
      return isNaN(a) ? [200, 200, 200] : ramp(MAGMA, a / amax);
    }, left, top, bw, bh);
    var g = c.g, every = Math.ceil(rowsN / Math.max(1, Math.floor(bh / 12)));
    g.fillStyle = "#222"; g.textAlign = "right";
    for (var r = 0; r < rowsN; r += every) {
      var named = opt.names && opt.names.length === rowsN;
      g.fillText(named ? String(opt.names[r]) : String(r), left - 4, top + (r + 0.5) * rh);
    }
    var f = opt.frequencies;
    if (f && f.length === colsN) xAxis(c, left, top + bh + 2, bw, f[0], f[colsN - 1], "frequency (Hz)");
    else xAxis(c, left, top + bh + 2, bw, 0, colsN - 1, opt.xlabel || "position");
    return c.el;
  }

  function bars(v, w) {
    var n = v.length, c = canvas(w, 160), amax = absMax(v) || 1, bw = (w - 16) / n, g = c.g;
    g.fillStyle = "#2b59c3";
    for (var i = 0; i < n; i++) {
      var hgt = Math.abs(v[i]) / amax * 130;
      g.fillRect(8 + i * bw, 140 - hgt, Math.max(1, bw - 1), hgt);
    }
    g.fillStyle = "#222"; g.fillText("|attribution| per feature (" + n + ")", 8, 152);
    return c.el;
  }

  /* The channels drawn for a sample: all up to 20, else the 20 with the most |map| in the first full map (the
     largest |input| when every map is time-only), as the gallery draws them. */
  function shownRows(C, T, maps, x) {
    if (C <= 20) return Array.from({length: C}, function (_, i) { return i; });
    var full = maps.filter(function (v) { return v.length === C * T; })[0] || x, sums = [];  /* else the largest |x| */
    for (var r = 0; r < C; r++) {
      var s = 0;
      for (var t = 0; t < T; t++) s += Math.abs(full[r * T + t]) || 0;
      sums.push([s, r]);
    }
    sums.sort(function (a, b) { return b[0] - a[0] || a[1] - b[1]; });
    return sums.slice(0, 20).map(function (p) { return p[1]; }).sort(function (a, b) { return a - b; });
  }

  window.CerebroDraw = {bytes: bytes, values: values, note: note, signal: signal, image: image, input: input,
                        tokens: tokens, heatmap: heatmap, bars: bars, shownRows: shownRows};
})();

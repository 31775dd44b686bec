// The Latent space page's map: every point of a dataset on a canvas, drawn as a density picture (each pixel the
// mean colour of its points, darker and more opaque where more of them pile up), with the image of the point under
// the pointer beside it, an images mode (the data's own lattice: the image nearest each cell of a grid, beside the
// decoder's image at each cell's centre), zoom and pan, and box, lasso and click selection sent back to Python as a
// bitset over the points. Python (vae_core/ui/map_view.py) sends the points once as binary columns
// (vae_core/latent_map.payload), by URL where the app's server serves them, and only small state on a rerun.

const BLOBS = new Map(); // url or inline key → Promise<ArrayBuffer>: each map's columns load once per page
const THUMBS = new Map(); // images url + row + size → ImageBitmap
const MARGIN = { left: 46, right: 10, top: 10, bottom: 34 }; // CSS px around the plot area
const HOVER_PX = 10; // how near (CSS px) the pointer must be to a point to show it
const GRID = 256; // cells per axis of the hover index

function blob(spec) {
  const key = spec.url || spec.key;
  if (!BLOBS.has(key)) {
    BLOBS.set(key, spec.url
      ? fetch(spec.url).then((r) => { if (!r.ok) throw new Error(`${r.status} ${spec.url}`); return r.arrayBuffer(); })
      : Promise.resolve(Uint8Array.from(atob(spec.b64), (c) => c.charCodeAt(0)).buffer));
  }
  return BLOBS.get(key);
}

function columns(buffer) {
  const n = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
  const body = 4 + n;
  const kinds = { f4: Float32Array, i4: Int32Array, u4: Uint32Array, u2: Uint16Array, u1: Uint8Array };
  const out = {};
  for (const [name, [kind, offset, length]] of Object.entries(header)) {
    out[name] = new kinds[kind](buffer, body + offset, length);
  }
  return out;
}

function bitsFrom(b64, n) {
  const bits = new Uint8Array((n + 7) >> 3);
  if (b64) bits.set(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).subarray(0, bits.length));
  return bits;
}

function bitsTo64(bits) {
  let s = "";
  for (let i = 0; i < bits.length; i += 0x8000) s += String.fromCharCode.apply(null, bits.subarray(i, i + 0x8000));
  return btoa(s);
}

function niceStep(range, count) {
  const raw = range / Math.max(1, count);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const m = raw / p;
  return p * (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10);
}

function el(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

class Panel {
  // One canvas with its overlay: the map, or the decoder's lattice beside it in images mode.
  constructor(parent, cls) {
    this.box = el("div", `vm-panel ${cls}`, parent);
    this.title = el("div", "vm-title", this.box);
    this.stack = el("div", "vm-stack", this.box);
    this.canvas = el("canvas", "vm-canvas", this.stack);
    this.overlay = el("canvas", "vm-overlay", this.stack);
  }

  size(width, height, dpr) {
    for (const c of [this.canvas, this.overlay]) {
      c.width = Math.max(1, Math.round(width * dpr));
      c.height = Math.max(1, Math.round(height * dpr));
      c.style.width = `${width}px`;
      c.style.height = `${height}px`;
    }
  }
}

class MapView {
  constructor(root) {
    this.root = el("div", "vm-root", root);
    const bar = el("div", "vm-toolbar", this.root);
    this.tools = {};
    for (const [tool, label, tip] of [["pan", "Pan", "drag to move; wheel to zoom"],
                                      ["box", "Box", "drag a box to select (Shift: add)"],
                                      ["lasso", "Lasso", "draw around points to select (Shift: add)"]]) {
      const b = el("button", "vm-tool", bar, label);
      b.title = tip;
      b.dataset.tool = tool;
      b.addEventListener("click", () => this.setTool(tool));
      this.tools[tool] = b;
    }
    el("span", "vm-sep", bar);
    this.modeButton = el("button", "vm-mode", bar, "Images");
    this.modeButton.title = "show the images themselves: the image nearest each cell of a grid, beside the decoder's";
    this.modeButton.addEventListener("click", () => this.setMode(this.mode === "images" ? "points" : "images"));
    el("button", "vm-reset", bar, "Reset view").addEventListener("click", () => { this.resetView(); this.draw(); });
    this.clearButton = el("button", "vm-clear", bar, "Clear selection");
    this.clearButton.addEventListener("click", () => this.select(null, false, "clear"));
    this.status = el("span", "vm-status", bar);
    this.panels = el("div", "vm-panels", this.root);
    this.main = new Panel(this.panels, "vm-main");
    this.decoder = new Panel(this.panels, "vm-decoder");
    this.legend = el("div", "vm-legend", this.root);
    this.tip = el("div", "vm-tip", this.root);
    this.tipImage = el("img", "vm-tip-image", this.tip);
    this.tipText = el("div", "vm-tip-text", this.tip);
    this.tip.hidden = true;
    this.tool = "box";
    this.mode = "points";
    this.seq = 0;
    this.data = null;
    this.pts = null;
    this.col = null;
    this.sel = null; // Uint8Array bitset over the points: what is highlighted
    this.drag = null;
    this.hover = -1;
    this.frame = 0;
    this.setTool("box");
    this.listen(this.main, true);
    this.listen(this.decoder, false);
    this.resize = new ResizeObserver(() => this.layout());
    this.resize.observe(this.root);
  }

  // ---------------------------------------------------------------- data from Python

  update(data, setState) {
    this.setState = setState;
    const old = this.data || {};
    this.data = data;
    if (old.map_id !== data.map_id) {
      this.pts = null;
      this.view = null;
      this.loading = data.map_id;
      blob(data.points).then((buf) => {
        if (this.loading !== data.map_id) return;
        this.pts = columns(buf);
        this.n = this.pts.x.length;
        this.index();
        this.resetView();
        this.applyHighlight();
        this.draw();
      }).catch((err) => { this.status.textContent = `The map could not be loaded (${err.message}).`; });
    }
    const colours = (c) => (c ? c.url || c.key : null);
    if (colours(old.colours) !== colours(data.colours)) {
      this.col = null;
      const want = colours(data.colours);
      blob(data.colours).then((buf) => {
        if (colours(this.data.colours) !== want) return; // another colouring was asked for meanwhile
        this.col = columns(buf);
        this.draw();
      });
    }
    this.modeButton.disabled = !data.images_url;
    const selecting = data.selectable !== false; // a map that only shows where something lands: pan and zoom
    for (const b of [this.tools.box, this.tools.lasso, this.clearButton, this.modeButton]) b.hidden = !selecting;
    if (!selecting && this.tool !== "pan") this.setTool("pan");
    this.modeButton.classList.toggle("vm-on", this.mode === "images");
    this.main.title.textContent = data.title || "";
    this.main.title.hidden = !data.title && this.mode !== "images";
    this.applyHighlight();
    this.drawLegend();
    this.layout();
  }

  applyHighlight() {
    if (!this.pts || !this.data) return;
    if (this.data.selection_seq >= this.seq || !this.sel) {
      this.sel = this.data.highlight ? bitsFrom(this.data.highlight, this.n) : null;
      this.selCount = this.data.highlight_count || 0;
    }
  }

  index() {
    // A uniform grid over the points' bounds, points listed per cell (CSR): the nearest point to the pointer in
    // a few cells, whatever the number of points.
    const { x, y } = this.pts;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < this.n; i++) {
      if (x[i] < x0) x0 = x[i];
      if (x[i] > x1) x1 = x[i];
      if (y[i] < y0) y0 = y[i];
      if (y[i] > y1) y1 = y[i];
    }
    if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
    if (!(y1 > y0)) { y0 -= 1; y1 += 1; }
    this.bounds = { x0, x1, y0, y1 };
    // the view to start from: where all but the outermost 0.2 % of the points lie (a few strays would shrink the rest)
    const step = Math.max(1, Math.floor(this.n / 20000)), xs = [], ys = [];
    for (let i = 0; i < this.n; i += step) { xs.push(x[i]); ys.push(y[i]); }
    xs.sort((a, b) => a - b);
    ys.sort((a, b) => a - b);
    const q = (v, f) => v[Math.min(v.length - 1, Math.max(0, Math.round(f * (v.length - 1))))];
    this.bulk = { x0: q(xs, 0.001), x1: q(xs, 0.999), y0: q(ys, 0.001), y1: q(ys, 0.999) };
    if (!(this.bulk.x1 > this.bulk.x0) || !(this.bulk.y1 > this.bulk.y0)) this.bulk = this.bounds;
    const cell = new Int32Array(this.n);
    const start = new Int32Array(GRID * GRID + 1);
    for (let i = 0; i < this.n; i++) {
      const cx = Math.min(GRID - 1, Math.floor((x[i] - x0) / (x1 - x0) * GRID));
      const cy = Math.min(GRID - 1, Math.floor((y[i] - y0) / (y1 - y0) * GRID));
      cell[i] = cy * GRID + cx;
      start[cell[i] + 1]++;
    }
    for (let c = 0; c < GRID * GRID; c++) start[c + 1] += start[c];
    const fill = start.slice(0, GRID * GRID);
    const items = new Int32Array(this.n);
    for (let i = 0; i < this.n; i++) items[fill[cell[i]]++] = i;
    this.grid = { start, items };
  }

  // ---------------------------------------------------------------- geometry

  layout() {
    const width = this.root.clientWidth || 600;
    const both = this.mode === "images" && !!(this.data && this.data.decode_url);
    this.decoder.box.hidden = !both;
    const panelWidth = both ? Math.floor((width - 12) / 2) : width;
    const height = (this.data && this.data.height) || 560;
    this.dpr = window.devicePixelRatio || 1;
    this.main.size(panelWidth, height, this.dpr);
    this.decoder.size(panelWidth, height, this.dpr);
    this.cssW = panelWidth;
    this.cssH = height;
    if (this.view) this.fitAspect();
    this.draw();
  }

  resetView() {
    if (!this.bulk) return;
    let { x0, x1, y0, y1 } = this.bulk;
    if (this.data.rings) { // the prior's 3σ circle stays in view: a good model fills it
      const ring = typeof this.data.rings === "object" ? this.data.rings : { x: 0, y: 0, scale: 1 };
      const r = 3.2 * ring.scale;
      x0 = Math.min(x0, ring.x - r); x1 = Math.max(x1, ring.x + r);
      y0 = Math.min(y0, ring.y - r); y1 = Math.max(y1, ring.y + r);
    }
    const px = (x1 - x0) * 0.04, py = (y1 - y0) * 0.04;
    this.view = { x0: x0 - px, x1: x1 + px, y0: y0 - py, y1: y1 + py };
    this.fitAspect();
  }

  fitAspect() {
    // Equal units on both axes (raw z, PCA): widen the view's shorter side about its centre.
    if (!this.data.equal) return;
    const v = this.view, w = this.plotW(), h = this.plotH();
    const k = Math.min(w / (v.x1 - v.x0), h / (v.y1 - v.y0));
    const cx = (v.x0 + v.x1) / 2, cy = (v.y0 + v.y1) / 2;
    this.view = { x0: cx - w / k / 2, x1: cx + w / k / 2, y0: cy - h / k / 2, y1: cy + h / k / 2 };
  }

  plotW() { return Math.max(10, this.cssW - MARGIN.left - MARGIN.right); }
  plotH() { return Math.max(10, this.cssH - MARGIN.top - MARGIN.bottom); }
  sx(x) { return MARGIN.left + (x - this.view.x0) / (this.view.x1 - this.view.x0) * this.plotW(); }
  sy(y) { return MARGIN.top + (this.view.y1 - y) / (this.view.y1 - this.view.y0) * this.plotH(); }
  dx(px) { return this.view.x0 + (px - MARGIN.left) / this.plotW() * (this.view.x1 - this.view.x0); }
  dy(py) { return this.view.y1 - (py - MARGIN.top) / this.plotH() * (this.view.y1 - this.view.y0); }

  // ---------------------------------------------------------------- drawing

  draw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.paint(); });
  }

  paint() {
    const d = this.data;
    if (!d || !this.pts || !this.view) {
      this.status.textContent = this.status.textContent || "loading the map…";
      return;
    }
    const shown = this.paintPoints(this.main.canvas, this.mode === "images" ? 0.35 : 1);
    const ctx = this.main.canvas.getContext("2d");
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    this.paintAxes(ctx);
    this.main.title.hidden = !d.title && this.mode !== "images";
    if (this.mode === "images") {
      this.main.title.textContent = (d.title ? `${d.title}: ` : "") + "the data (the image nearest each cell's centre)";
      this.paintImages();
    } else {
      this.main.title.textContent = d.title || "";
    }
    this.paintOverlay();
    const sel = this.sel ? ` · ${this.selCount.toLocaleString()} selected` : "";
    this.status.textContent = `${shown.toLocaleString()} of ${this.n.toLocaleString()} points in view${sel}`;
    this.root.dataset.drawn = String(this.n);
  }

  paintPoints(canvas, strength) {
    // Every point into per-pixel sums, then one image: the mean colour of each pixel's points, its opacity and
    // darkness growing with the log of their number (a density picture, never a blot).
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const dpr = this.dpr;
    const left = Math.round(MARGIN.left * dpr), top = Math.round(MARGIN.top * dpr);
    const w = Math.round(this.plotW() * dpr), h = Math.round(this.plotH() * dpr);
    const { x, y } = this.pts;
    const rgba = this.col ? this.col.rgba : null;
    const v = this.view;
    const kx = w / (v.x1 - v.x0), ky = h / (v.y1 - v.y0);
    let visible = 0;
    for (let i = 0; i < this.n; i++) {
      if (x[i] >= v.x0 && x[i] <= v.x1 && y[i] >= v.y0 && y[i] <= v.y1) visible++;
    }
    const size = Math.max(1, Math.round((visible > 50000 ? 1.5 : visible > 5000 ? 2.5 : 4) * dpr));
    const half = size >> 1;
    const layers = this.sel ? [false, true] : [null];
    const image = ctx.createImageData(w, h);
    const out = image.data;
    if (!this.acc || this.acc.length !== w * h * 4) this.acc = new Float32Array(w * h * 4);
    const acc = this.acc;
    for (const layer of layers) {
      acc.fill(0);
      let most = 0;
      for (let i = 0; i < this.n; i++) {
        if (layer !== null && ((this.sel[i >> 3] >> (i & 7)) & 1) !== (layer ? 1 : 0)) continue;
        const px = Math.floor((x[i] - v.x0) * kx) - half, py = Math.floor((v.y1 - y[i]) * ky) - half;
        if (px + size <= 0 || py + size <= 0 || px >= w || py >= h) continue;
        let r = 120, g = 120, b = 120;
        if (layer === false) { r = 205; g = 205; b = 205; } else if (rgba) {
          const c = rgba[i];
          r = c & 255; g = (c >> 8) & 255; b = (c >> 16) & 255;
        }
        for (let yy = Math.max(0, py); yy < Math.min(h, py + size); yy++) {
          for (let xx = Math.max(0, px); xx < Math.min(w, px + size); xx++) {
            const o = (yy * w + xx) * 4;
            acc[o] += r; acc[o + 1] += g; acc[o + 2] += b;
            const count = ++acc[o + 3];
            if (count > most) most = count;
          }
        }
      }
      const scale = 1 / Math.log1p(Math.max(2, most));
      const base = layer === false ? 0.5 * strength : strength;
      for (let p = 0; p < w * h; p++) {
        const o = p * 4, count = acc[o + 3];
        if (!count) continue;
        const t = Math.log1p(count) * scale;
        const dark = layer === false ? 1 : 1 - 0.4 * t;
        const alpha = base * (layer === false ? 0.6 : 0.55 + 0.45 * t);
        const a0 = out[o + 3] / 255;
        const a = alpha + a0 * (1 - alpha);
        for (let k = 0; k < 3; k++) {
          const c = acc[o + k] / count * dark;
          out[o + k] = (c * alpha + out[o + k] * a0 * (1 - alpha)) / a;
        }
        out[o + 3] = a * 255;
      }
    }
    ctx.putImageData(image, left, top);
    return visible;
  }

  paintAxes(ctx) {
    const d = this.data, v = this.view, w = this.plotW(), h = this.plotH();
    ctx.save();
    ctx.strokeStyle = "rgba(0,0,0,0.35)";
    ctx.fillStyle = "#444";
    ctx.font = "11px sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeRect(MARGIN.left + 0.5, MARGIN.top + 0.5, w, h);
    const sx = niceStep(v.x1 - v.x0, w / 90), sy = niceStep(v.y1 - v.y0, h / 60);
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let t = Math.ceil(v.x0 / sx) * sx; t <= v.x1; t += sx) {
      const px = this.sx(t);
      ctx.beginPath(); ctx.moveTo(px, MARGIN.top + h); ctx.lineTo(px, MARGIN.top + h + 4); ctx.stroke();
      ctx.fillText(+t.toPrecision(6) + "", px, MARGIN.top + h + 6);
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let t = Math.ceil(v.y0 / sy) * sy; t <= v.y1; t += sy) {
      const py = this.sy(t);
      ctx.beginPath(); ctx.moveTo(MARGIN.left - 4, py); ctx.lineTo(MARGIN.left, py); ctx.stroke();
      ctx.fillText(+t.toPrecision(6) + "", MARGIN.left - 6, py);
    }
    const [ax, ay] = d.axes || ["", ""];
    ctx.textAlign = "right"; ctx.textBaseline = "bottom";
    ctx.fillText(ax, MARGIN.left + w - 4, MARGIN.top + h - 4);
    ctx.save();
    ctx.translate(MARGIN.left + 12, MARGIN.top + 6);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "right"; ctx.textBaseline = "top";
    ctx.fillText(ay, 0, 0);
    ctx.restore();
    if (d.rings) this.paintRings(ctx);
    ctx.restore();
  }

  paintRings(ctx) {
    // The prior N(0, I)'s circles at 1, 2, 3σ: they hold 39 %, 86 % and 99 % of its mass (on a second map aligned
    // to the first, moved with it: data.rings gives their centre and scale there).
    const ring = typeof this.data.rings === "object" ? this.data.rings : { x: 0, y: 0, scale: 1 };
    ctx.save();
    ctx.beginPath();
    ctx.rect(MARGIN.left, MARGIN.top, this.plotW(), this.plotH());
    ctx.clip();
    ctx.setLineDash([3, 4]);
    ctx.strokeStyle = "rgba(0,0,0,0.45)";
    ctx.fillStyle = "rgba(0,0,0,0.55)";
    ctx.font = "10px sans-serif";
    for (const [r, share] of [[1, "39%"], [2, "86%"], [3, "99%"]]) {
      const cx = this.sx(ring.x), cy = this.sy(ring.y);
      const rx = this.sx(ring.x + r * ring.scale) - cx, ry = cy - this.sy(ring.y + r * ring.scale);
      ctx.beginPath();
      ctx.ellipse(cx, cy, Math.abs(rx), Math.abs(ry), 0, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.fillText(`${r}σ (${share})`, cx + rx * 0.72 + 2, cy - ry * 0.72 - 2);
    }
    ctx.restore();
  }

  paintOverlay() {
    const o = this.main.overlay, ctx = o.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, o.width, o.height);
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.save();
    ctx.beginPath();
    ctx.rect(MARGIN.left, MARGIN.top, this.plotW(), this.plotH());
    ctx.clip();
    for (const line of this.data.outlines || []) {
      ctx.beginPath();
      line.points.forEach(([x, y], k) => (k ? ctx.lineTo(this.sx(x), this.sy(y)) : ctx.moveTo(this.sx(x), this.sy(y))));
      ctx.strokeStyle = line.colour || "#000";
      ctx.lineWidth = 1.5;
      ctx.stroke();
    }
    for (const m of this.data.marks || []) {
      const px = this.sx(m.x), py = this.sy(m.y);
      ctx.lineWidth = 2;
      ctx.strokeStyle = m.colour || "#000";
      ctx.beginPath();
      if (m.symbol === "x") {
        ctx.moveTo(px - 6, py - 6); ctx.lineTo(px + 6, py + 6); ctx.moveTo(px + 6, py - 6); ctx.lineTo(px - 6, py + 6);
        ctx.strokeStyle = "#fff"; ctx.lineWidth = 4; ctx.stroke();
        ctx.strokeStyle = m.colour || "#000"; ctx.lineWidth = 2;
      } else {
        ctx.arc(px, py, 6, 0, 2 * Math.PI);
      }
      ctx.stroke();
      if (m.text) { ctx.fillStyle = "#000"; ctx.font = "11px sans-serif"; ctx.fillText(m.text, px + 8, py - 8); }
    }
    if (this.hover >= 0) {
      ctx.beginPath();
      ctx.arc(this.sx(this.pts.x[this.hover]), this.sy(this.pts.y[this.hover]), 5, 0, 2 * Math.PI);
      ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5; ctx.stroke();
    }
    if (this.drag && this.drag.path && this.drag.tool !== "pan") {
      ctx.beginPath();
      const p = this.drag.path;
      if (this.drag.tool === "box") {
        const [a, b] = [p[0], p[p.length - 1]];
        ctx.rect(a[0], a[1], b[0] - a[0], b[1] - a[1]);
      } else {
        p.forEach(([px, py], k) => (k ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
        ctx.closePath();
      }
      ctx.fillStyle = "rgba(31,119,180,0.12)"; ctx.fill();
      ctx.setLineDash([4, 3]); ctx.strokeStyle = "#1f77b4"; ctx.lineWidth = 1; ctx.stroke();
    }
    ctx.restore();
  }

  // ---------------------------------------------------------------- images mode

  cells() {
    // A lattice fixed in map units (so panning moves it with the points), one cell per image_px CSS pixels.
    const px = this.data.image_px || 48;
    const size = px * (this.view.x1 - this.view.x0) / this.plotW();
    const sizeY = px * (this.view.y1 - this.view.y0) / this.plotH();
    const i0 = Math.floor(this.view.x0 / size), i1 = Math.ceil(this.view.x1 / size);
    const j0 = Math.floor(this.view.y0 / sizeY), j1 = Math.ceil(this.view.y1 / sizeY);
    return { px, size, sizeY, i0, i1, j0, j1 };
  }

  paintImages() {
    const g = this.cells(), { x, y } = this.pts;
    const best = new Map();
    for (let i = 0; i < this.n; i++) {
      if (x[i] < this.view.x0 || x[i] > this.view.x1 || y[i] < this.view.y0 || y[i] > this.view.y1) continue;
      if (this.sel && !((this.sel[i >> 3] >> (i & 7)) & 1)) continue;
      const ci = Math.floor(x[i] / g.size), cj = Math.floor(y[i] / g.sizeY);
      const ex = x[i] / g.size - ci - 0.5, ey = y[i] / g.sizeY - cj - 0.5;
      const key = ci * 1048576 + cj, dist = ex * ex + ey * ey, old = best.get(key);
      if (!old) best.set(key, { i, dist, ci, cj });
      else if (dist < old.dist) { old.i = i; old.dist = dist; }
    }
    const reps = [...best.values()].map(({ i, ci, cj }) => ({ i, ci, cj, row: this.pts.row[i] }));
    const drawn = this.paintCells(this.main, reps, g, (rep) => this.thumb(this.data.images_url, rep.row, g.px), true);
    this.root.dataset.cells = String(reps.length);
    this.root.dataset.thumbs = String(drawn);
    if (this.data.decode_url) this.paintDecoder(g, best);
  }

  paintCells(panel, reps, g, bitmapOf, framed) {
    // Draw each cell's image; returns how many were there to draw (the others are still loading).
    const ctx = panel.canvas.getContext("2d");
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    let drawn = 0;
    ctx.save();
    ctx.beginPath();
    ctx.rect(MARGIN.left, MARGIN.top, this.plotW(), this.plotH());
    ctx.clip();
    for (const rep of reps) {
      const left = this.sx(rep.ci * g.size), top = this.sy((rep.cj + 1) * g.sizeY);
      const side = g.px - 2;
      const bitmap = bitmapOf(rep);
      if (!bitmap) continue;
      drawn++;
      ctx.globalAlpha = rep.alpha === undefined ? 1 : rep.alpha;
      ctx.drawImage(bitmap, left + 1, top + 1, side, side);
      if (framed && this.col) {
        const c = this.col.rgba[rep.i];
        ctx.strokeStyle = `rgb(${c & 255},${(c >> 8) & 255},${(c >> 16) & 255})`;
        ctx.lineWidth = 1;
        ctx.strokeRect(left + 1.5, top + 1.5, side - 1, side - 1);
      }
    }
    ctx.restore();
    return drawn;
  }

  thumb(url, row, px) {
    // The image of one row at px CSS pixels, from the server's images route, loaded in batches; null until then.
    const key = `${url}|${row}|${px}`;
    const got = THUMBS.get(key);
    if (got) return got === "loading" ? null : got;
    (this.wanted = this.wanted || new Set()).add(row);
    clearTimeout(this.fetchTimer);
    this.fetchTimer = setTimeout(() => this.fetchThumbs(url, px), 30);
    return null;
  }

  fetchThumbs(url, px) {
    const rows = [...(this.wanted || [])];
    this.wanted = new Set();
    const size = Math.round(px * this.dpr);
    for (let k = 0; k < rows.length; k += 200) {
      const part = rows.slice(k, k + 200);
      part.forEach((row) => THUMBS.set(`${url}|${row}|${px}`, "loading"));
      fetch(`${url}?rows=${part.join(",")}&px=${size}`).then((r) => r.blob()).then(createImageBitmap).then(async (strip) => {
        for (let j = 0; j < part.length; j++) {
          THUMBS.set(`${url}|${part[j]}|${px}`, await createImageBitmap(strip, j * size, 0, size, size));
        }
        this.draw();
      }).catch(() => part.forEach((row) => THUMBS.delete(`${url}|${row}|${px}`)));
    }
  }

  paintDecoder(g, best) {
    // The decoder's lattice over the same cells: E[x|z] at each cell's centre, faded where no data lies (the
    // holes in the aggregate posterior that the decoder was never trained on).
    const d = this.decoder;
    const ctx = d.canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, d.canvas.width, d.canvas.height);
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    this.paintAxes(ctx);
    d.title.textContent = "the decoder (E[x|z] at each cell's centre; faded: no data there)";
    const nx = g.i1 - g.i0, ny = g.j1 - g.j0;
    if (nx * ny > 2500) return;
    const size = Math.round(g.px * this.dpr);
    const url = `${this.data.decode_url}?x0=${g.i0 * g.size}&dx=${g.size}&nx=${nx}&y0=${g.j0 * g.sizeY}` +
      `&dy=${g.sizeY}&ny=${ny}&px=${size}`;
    const reps = [];
    for (let cj = g.j0; cj < g.j1; cj++) {
      for (let ci = g.i0; ci < g.i1; ci++) {
        const k = (cj - g.j0) * nx + (ci - g.i0);
        reps.push({ ci, cj, k, alpha: best.has(ci * 1048576 + cj) ? 1 : 0.3 });
      }
    }
    const strip = THUMBS.get(url);
    if (strip && strip !== "loading") {
      this.paintCells(d, reps, g, (rep) => strip[rep.k], false);
    } else if (!strip) {
      THUMBS.set(url, "loading");
      fetch(url).then((r) => r.blob()).then(createImageBitmap).then(async (image) => {
        const parts = [];
        for (let k = 0; k < nx * ny; k++) parts.push(await createImageBitmap(image, k * size, 0, size, size));
        THUMBS.set(url, parts);
        this.draw();
      }).catch(() => THUMBS.delete(url));
    }
  }

  // ---------------------------------------------------------------- legend and tooltip

  drawLegend() {
    const lg = this.data.legend;
    this.legend.replaceChildren();
    if (!lg) return;
    if (lg.kind === "classes") {
      for (const item of lg.items) {
        const s = el("span", "vm-key", this.legend);
        el("span", "vm-swatch", s).style.background = item.colour;
        el("span", null, s, item.name);
      }
    } else {
      el("span", "vm-scale-name", this.legend, this.data.value_name || "");
      el("span", null, this.legend, lg.min.toPrecision(4));
      const bar = el("span", "vm-scale", this.legend);
      bar.style.background = `linear-gradient(to right, ${lg.stops.join(",")})`;
      el("span", null, this.legend, lg.max.toPrecision(4));
    }
  }

  nearest(px, py) {
    if (!this.pts || !this.grid) return -1;
    const { x, y } = this.pts, b = this.bounds;
    const rx = HOVER_PX * (this.view.x1 - this.view.x0) / this.plotW();
    const ry = HOVER_PX * (this.view.y1 - this.view.y0) / this.plotH();
    const qx = this.dx(px), qy = this.dy(py);
    const cw = (b.x1 - b.x0) / GRID, ch = (b.y1 - b.y0) / GRID;
    const i0 = Math.max(0, Math.floor((qx - rx - b.x0) / cw)), i1 = Math.min(GRID - 1, Math.floor((qx + rx - b.x0) / cw));
    const j0 = Math.max(0, Math.floor((qy - ry - b.y0) / ch)), j1 = Math.min(GRID - 1, Math.floor((qy + ry - b.y0) / ch));
    let found = -1, bestDist = 1;
    for (let j = j0; j <= j1; j++) {
      for (let i = i0; i <= i1; i++) {
        const c = j * GRID + i;
        for (let k = this.grid.start[c]; k < this.grid.start[c + 1]; k++) {
          const p = this.grid.items[k];
          const ex = (x[p] - qx) / rx, ey = (y[p] - qy) / ry, dist = ex * ex + ey * ey;
          if (dist < bestDist) { bestDist = dist; found = p; }
        }
      }
    }
    return found;
  }

  showTip(i, px, py) {
    if (i === this.hover && !this.tip.hidden) return this.placeTip(px, py);
    this.hover = i;
    this.paintOverlay();
    if (i < 0) { this.tip.hidden = true; delete this.root.dataset.hover; return; }
    const d = this.data, row = this.pts.row[i];
    const names = d.class_names || [];
    const lines = [`#${row}` + (this.pts.label ? ` · ${names[this.pts.label[i]] ?? this.pts.label[i]}` : "") +
                   (this.pts.split ? ` · ${this.pts.split[i] ? "test" : "train"}` : "")];
    if (this.col && this.col.value && d.value_name) lines.push(`${d.value_name} ${this.col.value[i].toFixed(2)}`);
    lines.push(`${(d.axes || ["x", "y"])[0]} ${this.pts.x[i].toFixed(3)}, ${(d.axes || ["x", "y"])[1]} ${this.pts.y[i].toFixed(3)}`);
    this.tipText.textContent = lines.join("\n");
    if (d.images_url) {
      this.tipImage.hidden = false;
      const src = `${d.images_url}?rows=${row}&px=${Math.round((d.hover_px || 112) * this.dpr)}`;
      if (this.tipImage.getAttribute("src") !== src) {
        this.tipImage.dataset.row = "";
        this.tipImage.onload = () => { this.tipImage.dataset.row = String(row); };
        this.tipImage.src = src;
      }
      this.tipImage.style.width = this.tipImage.style.height = `${d.hover_px || 112}px`;
    } else {
      this.tipImage.hidden = true;
    }
    this.tip.hidden = false;
    this.root.dataset.hover = String(row);
    this.placeTip(px, py);
  }

  placeTip(px, py) {
    const box = this.main.stack.getBoundingClientRect(), root = this.root.getBoundingClientRect();
    let left = box.left - root.left + px + 16, top = box.top - root.top + py + 16;
    const w = this.tip.offsetWidth, h = this.tip.offsetHeight;
    if (left + w > root.width) left = box.left - root.left + px - w - 16;
    if (top + h > root.height) top = Math.max(0, box.top - root.top + py - h - 16);
    this.tip.style.left = `${left}px`;
    this.tip.style.top = `${top}px`;
  }

  // ---------------------------------------------------------------- pointer

  setTool(tool) {
    this.tool = tool;
    for (const [name, b] of Object.entries(this.tools)) b.classList.toggle("vm-on", name === tool);
    this.root.dataset.tool = tool;
  }

  setMode(mode) {
    this.mode = mode;
    this.modeButton.classList.toggle("vm-on", mode === "images");
    this.root.dataset.mode = mode;
    this.layout(); // one panel or two: then the whole map again, in the new shape
    this.resetView();
    this.draw();
  }

  listen(panel, selectable) {
    const stack = panel.stack;
    const at = (e) => { const r = stack.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
    stack.addEventListener("wheel", (e) => {
      if (!this.view) return;
      e.preventDefault();
      const [px, py] = at(e);
      const f = Math.exp(Math.sign(e.deltaY) * 0.18), cx = this.dx(px), cy = this.dy(py), v = this.view;
      this.view = { x0: cx + (v.x0 - cx) * f, x1: cx + (v.x1 - cx) * f, y0: cy + (v.y0 - cy) * f, y1: cy + (v.y1 - cy) * f };
      this.draw();
    }, { passive: false });
    stack.addEventListener("pointerdown", (e) => {
      if (!this.view || e.button !== 0) return;
      stack.setPointerCapture(e.pointerId);
      const p = at(e);
      const tool = selectable ? this.tool : "pan";
      this.drag = { tool, start: p, path: [p], view: { ...this.view }, add: e.shiftKey, t: performance.now() };
    });
    stack.addEventListener("pointermove", (e) => {
      const p = at(e);
      if (this.drag) {
        const dr = this.drag;
        if (dr.tool === "pan") {
          const kx = (dr.view.x1 - dr.view.x0) / this.plotW(), ky = (dr.view.y1 - dr.view.y0) / this.plotH();
          const mx = (p[0] - dr.start[0]) * kx, my = (p[1] - dr.start[1]) * ky;
          this.view = { x0: dr.view.x0 - mx, x1: dr.view.x1 - mx, y0: dr.view.y0 + my, y1: dr.view.y1 + my };
          this.draw();
        } else {
          dr.path.push(p);
          this.paintOverlay();
        }
        return;
      }
      if (selectable) this.showTip(this.nearest(p[0], p[1]), p[0], p[1]);
    });
    stack.addEventListener("pointerleave", () => { if (!this.drag && selectable) this.showTip(-1, 0, 0); });
    stack.addEventListener("pointerup", (e) => {
      const dr = this.drag;
      this.drag = null;
      if (!dr) return;
      const p = at(e);
      const moved = Math.hypot(p[0] - dr.start[0], p[1] - dr.start[1]);
      if (moved < 4 && selectable && this.data.selectable !== false) { // a click: that point alone
        const i = this.nearest(p[0], p[1]);
        if (i >= 0) this.select([i], dr.add, "click");
      } else if (dr.tool === "box" || dr.tool === "lasso") {
        this.select(this.inside(dr), dr.add, dr.tool);
      }
      this.paintOverlay();
      if (this.mode === "images") this.draw();
    });
    stack.addEventListener("dblclick", () => this.select(null, false, "clear"));
    this.root.tabIndex = 0;
    this.root.addEventListener("keydown", (e) => { if (e.key === "Escape") this.select(null, false, "clear"); });
  }

  inside(drag) {
    const { x, y } = this.pts, out = [];
    if (drag.tool === "box") {
      const [a, b] = [drag.path[0], drag.path[drag.path.length - 1]];
      const xa = this.dx(Math.min(a[0], b[0])), xb = this.dx(Math.max(a[0], b[0]));
      const ya = this.dy(Math.max(a[1], b[1])), yb = this.dy(Math.min(a[1], b[1]));
      for (let i = 0; i < this.n; i++) if (x[i] >= xa && x[i] <= xb && y[i] >= ya && y[i] <= yb) out.push(i);
      return out;
    }
    const poly = drag.path.map(([px, py]) => [this.dx(px), this.dy(py)]);
    let xa = Infinity, xb = -Infinity, ya = Infinity, yb = -Infinity;
    for (const [px, py] of poly) { xa = Math.min(xa, px); xb = Math.max(xb, px); ya = Math.min(ya, py); yb = Math.max(yb, py); }
    for (let i = 0; i < this.n; i++) {
      if (x[i] < xa || x[i] > xb || y[i] < ya || y[i] > yb) continue;
      let inPoly = false;
      for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) { // even-odd rule
        const [xa_, ya_] = poly[a], [xb_, yb_] = poly[b];
        if ((ya_ > y[i]) !== (yb_ > y[i]) && x[i] < (xb_ - xa_) * (y[i] - ya_) / (yb_ - ya_) + xa_) inPoly = !inPoly;
      }
      if (inPoly) out.push(i);
    }
    return out;
  }

  select(points, add, how) {
    if (!this.pts) return;
    const bits = add && this.sel ? this.sel.slice() : new Uint8Array((this.n + 7) >> 3);
    for (const i of points || []) bits[i >> 3] |= 1 << (i & 7);
    let count = 0;
    for (let k = 0; k < bits.length; k++) { let b = bits[k]; while (b) { count += b & 1; b >>= 1; } }
    this.seq = Math.max(this.seq, this.data.selection_seq || 0) + 1;
    this.sel = count ? bits : null;
    this.selCount = count;
    this.draw();
    if (this.setState) this.setState("selection", { seq: this.seq, bits: count ? bitsTo64(bits) : "", count, how });
  }
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let view = parentElement.__vaeMap;
  if (!view) {
    view = new MapView(parentElement);
    parentElement.__vaeMap = view;
  }
  view.update(data, setStateValue);
  return () => { // unmounted: a later mount builds the map afresh
    view.resize.disconnect();
    view.root.remove();
    delete parentElement.__vaeMap;
  };
}

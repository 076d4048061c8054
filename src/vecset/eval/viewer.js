// Interactive 3D view of input and reconstructed meshes, one colour per structure (vecset.eval.viewer).
// Self-contained: WebGL 1 and the page's own data (VIEWER_DATA), nothing fetched. Left half: the input; right
// half: the reconstruction; one camera for both. Drag to turn, wheel to zoom, double-click to reset. The wall menu
// shows one structure of a pair that touches in the input, and its button the other: a shared wall from each side.
"use strict";

(function () {
  const data = VIEWER_DATA;
  const canvas = document.getElementById("view");
  const status = document.getElementById("status");
  const gl = canvas.getContext("webgl", { antialias: true });
  if (!gl) {
    status.textContent = "This browser has no WebGL: the 3D view cannot be drawn.";
    document.body.dataset.drawn = "0";
    return;
  }

  function decode(base64, Type) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return new Type(bytes.buffer);
  }

  function vertexNormals(positions, indices) {
    const normals = new Float32Array(positions.length);
    for (let t = 0; t < indices.length; t += 3) {
      const a = 3 * indices[t], b = 3 * indices[t + 1], c = 3 * indices[t + 2];
      const ux = positions[b] - positions[a], uy = positions[b + 1] - positions[a + 1], uz = positions[b + 2] - positions[a + 2];
      const vx = positions[c] - positions[a], vy = positions[c + 1] - positions[a + 1], vz = positions[c + 2] - positions[a + 2];
      const nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
      for (const k of [a, b, c]) {
        normals[k] += nx; normals[k + 1] += ny; normals[k + 2] += nz;
      }
    }
    for (let k = 0; k < normals.length; k += 3) {
      const n = Math.hypot(normals[k], normals[k + 1], normals[k + 2]) || 1;
      normals[k] /= n; normals[k + 1] /= n; normals[k + 2] /= n;
    }
    return normals;
  }

  function compile(type, source) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
    return shader;
  }

  const program = gl.createProgram();
  gl.attachShader(program, compile(gl.VERTEX_SHADER, `
    attribute vec3 position; attribute vec3 normal;
    uniform mat4 view; uniform mat4 projection; varying vec3 viewNormal;
    void main() { viewNormal = mat3(view) * normal; gl_Position = projection * view * vec4(position, 1.0); }`));
  gl.attachShader(program, compile(gl.FRAGMENT_SHADER, `
    precision mediump float; uniform vec3 colour; varying vec3 viewNormal;
    void main() {
      float light = abs(normalize(viewNormal).z);  // a headlight; both sides lit
      gl_FragColor = vec4(colour * (0.35 + 0.65 * light), 1.0);
    }`));
  gl.linkProgram(program);
  gl.useProgram(program);
  const loc = {
    position: gl.getAttribLocation(program, "position"),
    normal: gl.getAttribLocation(program, "normal"),
    view: gl.getUniformLocation(program, "view"),
    projection: gl.getUniformLocation(program, "projection"),
    colour: gl.getUniformLocation(program, "colour"),
  };

  // Upload every mesh once; each case's bounds centre its camera.
  const cases = data.cases.map((entry) => {
    const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    const sides = {};
    for (const side of ["input", "reconstruction"]) {
      sides[side] = entry[side].map((mesh) => {
        if (!mesh) return null;
        const quantised = decode(mesh.positions, Uint16Array);
        const positions = new Float32Array(quantised.length);
        for (let k = 0; k < quantised.length; k++) {
          positions[k] = mesh.origin[k % 3] + (quantised[k] / 65535) * mesh.extent[k % 3];
        }
        const indices = decode(mesh.indices, Uint16Array);
        for (let k = 0; k < positions.length; k += 3) {
          for (let j = 0; j < 3; j++) {
            lo[j] = Math.min(lo[j], positions[k + j]);
            hi[j] = Math.max(hi[j], positions[k + j]);
          }
        }
        const buffers = { count: indices.length };
        for (const [name, array, target] of [
          ["position", positions, gl.ARRAY_BUFFER],
          ["normal", vertexNormals(positions, indices), gl.ARRAY_BUFFER],
          ["index", indices, gl.ELEMENT_ARRAY_BUFFER],
        ]) {
          buffers[name] = gl.createBuffer();
          gl.bindBuffer(target, buffers[name]);
          gl.bufferData(target, array, gl.STATIC_DRAW);
        }
        return buffers;
      });
    }
    if (!Number.isFinite(lo[0])) {  // nothing to draw in this case: any camera will do
      lo.fill(-1);
      hi.fill(1);
    }
    const centre = lo.map((v, j) => (v + hi[j]) / 2);
    const radius = Math.max(1e-3, Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) / 2);
    return { id: entry.id, caption: entry.caption, walls: entry.walls || [], sides, centre, radius };
  });

  const camera = { yaw: 0.6, pitch: 0.3, zoom: 1 };
  let current = 0;
  const visible = data.names.map(() => true);

  function matrices(aspect) {
    // Orbit about the case's centre: yaw about the superior axis (z in RAS), pitch above or below; yaw 0 looks
    // from anterior (+y), the superior axis up. Column-major, as WebGL reads them.
    const c = cases[current];
    const distance = (3 * c.radius) / camera.zoom;
    const cp = Math.cos(camera.pitch);
    const back = [cp * Math.sin(camera.yaw), cp * Math.cos(camera.yaw), Math.sin(camera.pitch)]; // centre → eye
    const eye = c.centre.map((v, j) => v + distance * back[j]);
    const f = back.map((v) => -v);
    const up = [0, 0, 1];
    const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
    const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let s = cross(f, up);
    const norm = Math.hypot(...s);
    s = s.map((v) => v / norm);
    const u = cross(s, f);
    const view = new Float32Array([
      s[0], u[0], -f[0], 0, s[1], u[1], -f[1], 0, s[2], u[2], -f[2], 0, -dot(s, eye), -dot(u, eye), dot(f, eye), 1,
    ]);
    const near = Math.max(distance - 2 * c.radius, distance * 1e-3), far = distance + 2 * c.radius;
    const g = 1 / Math.tan(0.35);
    const projection = new Float32Array([
      g / aspect, 0, 0, 0, 0, g, 0, 0, 0, 0, (far + near) / (near - far), -1, 0, 0, (2 * far * near) / (near - far), 0,
    ]);
    return { view, projection };
  }

  function draw() {
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    gl.enable(gl.DEPTH_TEST);
    gl.clearColor(1, 1, 1, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    const half = Math.floor(width / 2);
    const { view, projection } = matrices(half / height);
    gl.uniformMatrix4fv(loc.view, false, view);
    gl.uniformMatrix4fv(loc.projection, false, projection);
    let triangles = 0;
    ["input", "reconstruction"].forEach((side, k) => {
      gl.viewport(k * half, 0, half, height);
      cases[current].sides[side].forEach((mesh, c) => {
        if (!mesh || !visible[c]) return;
        gl.uniform3fv(loc.colour, data.colours[c].map((v) => v / 255));
        gl.bindBuffer(gl.ARRAY_BUFFER, mesh.position);
        gl.enableVertexAttribArray(loc.position);
        gl.vertexAttribPointer(loc.position, 3, gl.FLOAT, false, 0, 0);
        gl.bindBuffer(gl.ARRAY_BUFFER, mesh.normal);
        gl.enableVertexAttribArray(loc.normal);
        gl.vertexAttribPointer(loc.normal, 3, gl.FLOAT, false, 0, 0);
        gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, mesh.index);
        gl.drawElements(gl.TRIANGLES, mesh.count, gl.UNSIGNED_SHORT, 0);
        triangles += mesh.count / 3;
      });
    });
    // What was drawn, for a headless check: triangles and pixels that are not the white background.
    const pixels = new Uint8Array(width * height * 4);
    gl.readPixels(0, 0, width, height, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
    let painted = 0;
    for (let k = 0; k < pixels.length; k += 4) if (pixels[k] + pixels[k + 1] + pixels[k + 2] < 750) painted++;
    document.body.dataset.triangles = String(triangles);
    document.body.dataset.painted = String(painted);
    document.body.dataset.drawn = "1";
    status.textContent = `${cases[current].caption} — left: input, right: reconstruction; drag to turn, wheel to zoom`;
  }

  const boxes = [];
  function show(only) {  // only: the structures to draw (all when null)
    data.names.forEach((_, c) => {
      visible[c] = only === null || only.includes(c);
      boxes[c].checked = visible[c];
    });
    draw();
  }

  const wall = document.getElementById("wall");
  const side = document.getElementById("side");
  let facing = 0;  // which structure of the chosen pair is drawn
  function fillWalls() {
    wall.replaceChildren(new Option("every structure", ""));
    cases[current].walls.forEach(([a, b]) => wall.add(new Option(`wall ${data.names[a]} / ${data.names[b]}`, `${a},${b}`)));
    side.disabled = true;
  }
  function showWall() {
    if (!wall.value) { side.disabled = true; show(null); return; }
    const pair = wall.value.split(",").map(Number);
    side.disabled = false;
    side.textContent = `seen from ${data.names[pair[1 - facing]]}`;
    show([pair[facing]]);
  }
  wall.addEventListener("change", () => { facing = 0; showWall(); });
  side.addEventListener("click", () => { facing = 1 - facing; showWall(); });

  const select = document.getElementById("case");
  cases.forEach((c, k) => select.add(new Option(c.caption, String(k))));
  select.addEventListener("change", () => { current = Number(select.value); fillWalls(); show(null); });

  const toggles = document.getElementById("structures");
  data.names.forEach((name, c) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.addEventListener("change", () => { visible[c] = box.checked; draw(); });
    boxes.push(box);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${data.colours[c].join(",")})`;
    label.append(box, swatch, document.createTextNode(name));
    toggles.append(label);
  });

  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = [e.clientX, e.clientY]; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    camera.yaw += (e.clientX - drag[0]) * 0.01;
    camera.pitch = Math.max(-1.5, Math.min(1.5, camera.pitch + (e.clientY - drag[1]) * 0.01));
    drag = [e.clientX, e.clientY];
    draw();
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    camera.zoom = Math.max(0.2, Math.min(20, camera.zoom * Math.exp(-e.deltaY * 0.001)));
    draw();
  }, { passive: false });
  canvas.addEventListener("dblclick", () => { Object.assign(camera, { yaw: 0.6, pitch: 0.3, zoom: 1 }); draw(); });
  window.addEventListener("resize", draw);
  fillWalls();
  draw();
})();

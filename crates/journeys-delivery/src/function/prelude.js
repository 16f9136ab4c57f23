// The globals of a destination function, run once in each fresh context before the user's code:
// Segment's error classes, `console`, `fetch` with `Headers` and `Response`, `btoa`/`atob`, and
// the entry points the worker calls. `__journeys_native` (log, fetch) is set by the worker and
// taken out of sight here.
(function () {
  'use strict';
  const native = globalThis.__journeys_native;
  delete globalThis.__journeys_native;

  function defineError(name) {
    const cls = class extends Error {
      constructor(message) {
        super(message);
        this.name = name;
      }
    };
    Object.defineProperty(cls, 'name', { value: name });
    globalThis[name] = cls;
  }
  for (const name of ['RetryError', 'ValidationError', 'InvalidEventPayload',
    'EventNotSupported', 'InvalidSettingsError']) {
    defineError(name);
  }

  function show(value) {
    if (typeof value === 'string') return value;
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    try {
      const json = JSON.stringify(value);
      return json === undefined ? String(value) : json;
    } catch (e) {
      return String(value);
    }
  }
  const logger = (level) => (...args) => native.log(level, args.map(show).join(' '));
  globalThis.console = {
    log: logger('log'), info: logger('info'), warn: logger('warn'),
    error: logger('error'), debug: logger('debug'),
  };

  globalThis.require = function (name) {
    throw new Error(`require(${JSON.stringify(String(name))}) is not available in destination functions: there are no modules, file system or process; use fetch for HTTP`);
  };

  class Headers {
    constructor(init) {
      this._map = new Map();
      if (init instanceof Headers) {
        init.forEach((v, k) => this.append(k, v));
      } else if (Array.isArray(init)) {
        for (const [k, v] of init) this.append(k, v);
      } else if (init && typeof init === 'object') {
        for (const k of Object.keys(init)) this.append(k, init[k]);
      }
    }
    append(name, value) {
      const key = String(name).toLowerCase();
      const old = this._map.get(key);
      this._map.set(key, old === undefined ? String(value) : `${old}, ${value}`);
    }
    set(name, value) { this._map.set(String(name).toLowerCase(), String(value)); }
    get(name) {
      const v = this._map.get(String(name).toLowerCase());
      return v === undefined ? null : v;
    }
    has(name) { return this._map.has(String(name).toLowerCase()); }
    delete(name) { this._map.delete(String(name).toLowerCase()); }
    forEach(f, self) { for (const [k, v] of this._map) f.call(self, v, k, this); }
    entries() { return this._map.entries(); }
    keys() { return this._map.keys(); }
    values() { return this._map.values(); }
    [Symbol.iterator]() { return this._map.entries(); }
  }
  globalThis.Headers = Headers;

  class Response {
    constructor(body, init) {
      init = init || {};
      this._body = body === undefined || body === null ? '' : String(body);
      this.status = init.status === undefined ? 200 : init.status;
      this.statusText = init.statusText || '';
      this.headers = new Headers(init.headers);
      this.url = init.url || '';
      this.ok = this.status >= 200 && this.status < 300;
    }
    text() { return Promise.resolve(this._body); }
    json() {
      try {
        return Promise.resolve(JSON.parse(this._body));
      } catch (e) {
        return Promise.reject(e);
      }
    }
  }
  globalThis.Response = Response;

  const pending = new Map();
  globalThis.fetch = function (input, init) {
    init = init || {};
    return new Promise((resolve, reject) => {
      const url = String(input);
      const method = String(init.method || 'GET').toUpperCase();
      const headers = [];
      new Headers(init.headers).forEach((v, k) => headers.push(k, v));
      const body = init.body === undefined || init.body === null ? '' : String(init.body);
      const id = native.fetch(url, method, headers, body);
      pending.set(id, { resolve, reject, url });
    });
  };

  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  globalThis.btoa = function (text) {
    text = String(text);
    let out = '';
    for (let i = 0; i < text.length; i += 3) {
      const a = text.charCodeAt(i), b = text.charCodeAt(i + 1), c = text.charCodeAt(i + 2);
      if (a > 255 || b > 255 || c > 255) throw new Error('btoa: character outside Latin-1');
      const n = (a << 16) | ((b || 0) << 8) | (c || 0);
      out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63] +
        (i + 1 < text.length ? B64[(n >> 6) & 63] : '=') +
        (i + 2 < text.length ? B64[n & 63] : '=');
    }
    return out;
  };
  globalThis.atob = function (text) {
    text = String(text).replace(/[\s=]+/g, '');
    let out = '', bits = 0, acc = 0;
    for (const ch of text) {
      const v = B64.indexOf(ch);
      if (v < 0) throw new Error('atob: not base64');
      acc = (acc << 6) | v;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out += String.fromCharCode((acc >> bits) & 255);
      }
    }
    return out;
  };

  function describe(e) {
    if (e !== null && typeof e === 'object') {
      const name = typeof e.name === 'string' && e.name ? e.name : 'Error';
      const message = e.message === undefined ? show(e) : String(e.message);
      return { name, message };
    }
    return { name: 'Error', message: String(e) };
  }

  const state = { done: false, result: undefined, error: undefined };
  const hidden = (name, value) =>
    Object.defineProperty(globalThis, name, { value, enumerable: false });

  // Starts one invocation; the worker then runs jobs and settles fetches until state.done.
  hidden('__journeys_invoke', function (handler, eventJson, settingsJson) {
    state.done = false;
    state.result = undefined;
    state.error = undefined;
    pending.clear();
    const fn = handlers[handler];
    if (typeof fn !== 'function') {
      state.done = true;
      state.error = { name: 'EventNotSupported', message: `${handler} is not defined` };
      return;
    }
    const event = JSON.parse(eventJson);
    const settings = JSON.parse(settingsJson);
    Promise.resolve()
      .then(() => fn(event, settings))
      .then((value) => {
        state.result = value === undefined ? undefined : JSON.stringify(value);
        state.done = true;
      }, (e) => {
        state.error = describe(e);
        state.done = true;
      });
  });
  hidden('__journeys_state', function () {
    return [state.done, state.result === undefined ? null : state.result,
      state.error ? state.error.name : null, state.error ? state.error.message : null];
  });
  // Ends a fetch with its response (headers: name, value, name, value…).
  hidden('__journeys_resolve', function (id, status, headers, body) {
    const p = pending.get(id);
    if (!p) return;
    pending.delete(id);
    const response = new Response(body, { status, url: p.url });
    for (let i = 0; i + 1 < headers.length; i += 2) response.headers.append(headers[i], headers[i + 1]);
    p.resolve(response);
  });
  // Ends a fetch that got no response.
  hidden('__journeys_reject', function (id, error) {
    const p = pending.get(id);
    if (!p) return;
    pending.delete(id);
    p.reject(new TypeError(`fetch ${p.url}: ${error}`));
  });
  // The handlers the user's code defined (`function`, `const`, `let` or `var`), captured by a
  // script the worker runs right after it; returns their names.
  const handlers = {};
  hidden('__journeys_register', function (table) {
    for (const name of Object.keys(table)) {
      if (typeof table[name] === 'function') handlers[name] = table[name];
    }
    return Object.keys(handlers);
  });
})();

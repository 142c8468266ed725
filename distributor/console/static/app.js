// meshguard console: a dependency-free single-page app over the
// distributor's JSON API (api/...). Everything a record or a poller says is
// untrusted: it reaches the page as text nodes and SVG attributes only,
// never as markup.
'use strict';

(() => {
  // Pages in the navigation.
  const PAGES = [
    { id: 'channels', title: 'Channels', render: renderChannels },
    { id: 'decisions', title: 'Decision log', render: renderDecisions },
    { id: 'charts', title: 'Charts', render: renderCharts },
    { id: 'registry', title: 'Registry', render: renderRegistry },
  ];
  const ROUTES = { record: renderRecord, entry: renderEntry };
  // PARENT is the navigation entry a route belongs to.
  const PARENT = { record: 'decisions', entry: 'registry' };

  // Filter fields, in form order; names are the API's query parameters.
  const FILTERS = [
    { name: 'decision', label: 'Decision', options: ['', 'allow', 'deny', 'dry-run-deny', 'error', 'unavailable', 'gap', 'registry'] },
    { name: 'rule', label: 'Rule', values: 'rule' },
    { name: 'subject', label: 'Subject', values: 'subject', hint: 'spiffe://… (end with * for a prefix)' },
    { name: 'device', label: 'Device', values: 'device' },
    { name: 'path', label: 'Path', values: 'path', hint: '/api/… (end with * for a prefix)' },
    { name: 'revision', label: 'Bundle revision', values: 'revision' },
    { name: 'proxy', label: 'Proxy', values: 'proxy' },
    { name: 'uploader', label: 'Uploaded by', values: 'uploader' },
    { name: 'since', label: 'Since', hint: 'RFC 3339, e.g. 2026-11-23T08:00:00Z' },
    { name: 'until', label: 'Until', hint: 'RFC 3339' },
  ];
  const RANGES = [['', 'any time'], ['15m', 'last 15 minutes'], ['1h', 'last hour'], ['24h', 'last 24 hours'], ['7d', 'last 7 days']];
  const RANGE_MS = { '15m': 9e5, '1h': 36e5, '24h': 864e5, '7d': 6048e5 };
  const PALETTE = ['#1f6feb', '#d1242f', '#1a7f37', '#9a6700', '#8250df', '#0a7d8c', '#bf3989', '#57606a', '#fb8500'];

  // --- DOM helpers -------------------------------------------------------

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    append(e, kids);
    return e;
  }

  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    setAttrs(e, attrs);
    append(e, kids);
    return e;
  }

  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(e, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
  }

  function table(headers, rows, attrs) {
    return el('table', attrs,
      el('thead', null, el('tr', null, headers.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', null, rows));
  }

  // --- formatting ----------------------------------------------------------

  const num = (n) => Number(n || 0).toLocaleString('en-US');

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toISOString().replace('T', ' ').replace(/\.000Z$/, 'Z');
  }

  function ago(iso) {
    const s = Math.round((Date.now() - new Date(iso)) / 1000);
    if (isNaN(s)) return '';
    const abs = Math.abs(s);
    const v = abs < 60 ? abs + ' s' : abs < 3600 ? Math.round(abs / 60) + ' min' : abs < 86400 ? Math.round(abs / 3600) + ' h' : Math.round(abs / 86400) + ' d';
    return s >= 0 ? v + ' ago' : 'in ' + v;
  }

  function bytes(n) {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }

  const short = (h) => (h && h.length > 16 ? h.slice(0, 16) + '…' : h || '—');

  function decisionBadge(d) {
    return el('span', { class: 'badge d-' + String(d).replace(/[^a-z-]/g, '') }, d || '?');
  }

  // --- API -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, params) {
    const q = params && params.toString() ? '?' + params.toString() : '';
    const r = await fetch('api/' + path + q, { headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' });
    if (!r.ok) {
      let msg = r.statusText;
      try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
      throw new ApiError(r.status, msg);
    }
    return r.json();
  }

  // apiFilter turns the page's parameters into the API's filter parameters
  // (a relative range becomes since).
  function apiFilter(params) {
    const out = new URLSearchParams();
    for (const f of FILTERS) {
      const v = params.get(f.name);
      if (v) out.set(f.name, v);
    }
    const range = params.get('range');
    if (RANGE_MS[range] && !params.get('since')) out.set('since', new Date(Date.now() - RANGE_MS[range]).toISOString());
    return out;
  }

  // --- routing ---------------------------------------------------------------

  function parseHash() {
    const h = location.hash.replace(/^#\/?/, '');
    const [path, query] = h.split('?', 2);
    const parts = path.split('/').filter(Boolean);
    return { page: parts[0] || 'channels', arg: parts[1], params: new URLSearchParams(query || '') };
  }

  function go(page, params) {
    const q = params && params.toString() ? '?' + params.toString() : '';
    location.hash = '#/' + page + q;
  }

  let generation = 0;

  async function route() {
    const { page, arg, params } = parseHash();
    const main = document.getElementById('app');
    const gen = ++generation;
    const def = PAGES.find((p) => p.id === page);
    const render = def ? def.render : ROUTES[page];
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page || PARENT[page] === a.dataset.page);
    document.title = (def ? def.title : page) + ' · meshguard console';
    if (page !== 'channels' && page !== 'decisions') {
      // Those two read the status themselves; the others refresh the header.
      api('status').then((st) => { if (gen === generation) showLogState(st); }).catch(() => { /* the page shows errors */ });
    }
    const view = el('div', { class: 'view', id: 'view-' + page, 'aria-busy': 'true' });
    // The hash this view answers, so a reader (or a test) can tell it from
    // the view of the previous hash while the new one loads.
    view.dataset.hash = location.hash;
    main.replaceChildren(view);
    if (!render) {
      view.append(el('p', { class: 'error' }, 'No such page: ' + page));
      return;
    }
    try {
      await render(view, params, arg, () => gen === generation);
    } catch (e) {
      if (gen !== generation) return;
      view.append(errorBox(e));
    } finally {
      view.setAttribute('aria-busy', 'false');
      view.dataset.ready = 'true';
    }
  }

  function errorBox(e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      return el('div', { class: 'error', id: 'error' },
        el('strong', null, e.status === 401 ? 'Sign-in needed. ' : 'Access denied. '),
        'The console needs the audit action on the distributor: ', e.message);
    }
    return el('div', { class: 'error', id: 'error' }, el('strong', null, 'Error: '), e.message);
  }

  // --- log state in the header -------------------------------------------

  function integrityText(log) {
    const i = log.integrity;
    if (i.problem) return { cls: 'bad', text: `Merkle tree check fails at seq ${num(i.bad_seq)}: verified through seq ${num(i.verified)}` };
    if (i.verified < log.records) return { cls: 'pending', text: `verifying: ${num(i.verified)} of ${num(log.records)} records checked` };
    const cp = i.checkpoint ? `, matching the signed checkpoint of ${num(i.checkpoint.size)} records` : '';
    return { cls: 'ok', text: `Merkle tree verified through seq ${num(i.verified)}${cp}` };
  }

  function showLogState(st) {
    const s = document.getElementById('log-state');
    const it = integrityText(st.decision_log);
    s.className = 'log-state ' + it.cls;
    s.replaceChildren(`${num(st.decision_log.records)} records · ${it.text}`);
  }

  // --- channels ----------------------------------------------------------------

  async function renderChannels(view) {
    const st = await api('status');
    showLogState(st);
    const log = st.decision_log;
    const it = integrityText(log);
    view.append(el('h1', null, 'Channels'),
      el('div', { class: 'cards' },
        card('Channels', num(st.channels.length)),
        card('Pollers tracked', num(st.pollers.tracked), st.pollers.evicted ? `${num(st.pollers.evicted)} dropped (table full)` : 'since the distributor started'),
        card('Decision records', num(log.records), `${bytes(log.bytes)} in ${num(log.segments)} segment${log.segments === 1 ? '' : 's'}`),
        card('Last checkpoint', log.checkpoint.signed ? num(log.checkpoint.seq) + ' records' : 'none yet',
          log.checkpoint.signed ? `${log.checkpoint.kind} by ${log.checkpoint.origin}: root ${short(log.checkpoint.hash)}` : 'the first is signed when the log grows', 'checkpoint'),
        card('Integrity', it.cls === 'ok' ? 'intact' : it.cls === 'bad' ? 'BROKEN' : 'checking', it.text, 'integrity ' + it.cls)));
    if (log.integrity.problem) view.append(el('p', { class: 'error', id: 'integrity-problem' }, `seq ${log.integrity.bad_seq}: ${log.integrity.problem}`));
    if (!st.channels.length) {
      view.append(el('p', { class: 'muted', id: 'no-channels' }, 'No channel has a bundle yet. Publish one with meshguard push bundle.'));
      return;
    }
    for (const ch of st.channels) view.append(channelSection(ch));
  }

  function card(title, value, sub, cls) {
    return el('div', { class: 'card ' + (cls || '') }, el('div', { class: 'card-title' }, title),
      el('div', { class: 'card-value' }, value), sub ? el('div', { class: 'card-sub' }, sub) : null);
  }

  function expiryCell(ri, ch) {
    if (!ri.expires) return '—';
    const cls = ch.expiry ? (ch.expiry.expired ? 'badge bad' : 'badge warn') : 'badge ok';
    const label = ch.expiry ? (ch.expiry.expired ? 'expired' : 'expires soon') : 'valid';
    return [fmtTime(ri.expires), ' ', el('span', { class: cls, title: ch.expiry ? ch.expiry.warning : '' }, label, ' (', ago(ri.expires), ')')];
  }

  function channelSection(ch) {
    const sec = el('section', { class: 'channel', 'data-channel': ch.name }, el('h2', null, 'Channel ', el('code', null, ch.name)));
    const latest = ch.latest;
    if (!latest) {
      sec.append(el('p', { class: 'muted' }, 'No bundle published yet.'));
    } else {
      sec.append(el('dl', { class: 'facts' },
        fact('Latest revision', el('strong', { class: 'latest-revision' }, latest.revision)),
        fact('Signing key', el('code', { class: 'key-id' }, latest.key_id || 'not recorded (published before key ids were kept)')),
        fact('Created', fmtTime(latest.created)),
        fact('Expires', expiryCell(latest, ch)),
        fact('Published', fmtTime(latest.published)),
        fact('Digest', el('code', { title: latest.digest }, short(latest.digest)))));
    }
    if (ch.expiry) sec.append(el('p', { class: ch.expiry.expired ? 'error' : 'warning' }, ch.expiry.warning));

    sec.append(el('h3', null, 'Proxies polling this channel'));
    if (!ch.pollers.length) {
      sec.append(el('p', { class: 'muted' }, 'No proxy has polled this channel since the distributor started.'));
    } else {
      const rows = ch.pollers.map((p) => {
        const behind = latest && p.enforcing !== undefined && p.enforcing !== latest.revision;
        return el('tr', { class: behind ? 'behind' : null },
          el('td', null, el('code', null, p.identity)),
          el('td', null, p.proxy ? el('code', null, p.proxy) : el('span', { class: 'muted' }, 'not sent')),
          el('td', { class: 'enforcing' }, p.enforcing === undefined ? '—' : p.enforcing, behind ? el('span', { class: 'badge warn' }, 'behind') : null),
          el('td', null, p.served),
          el('td', null, p.status === 304 ? '304 unchanged' : String(p.status)),
          el('td', { title: fmtTime(p.last_seen) }, ago(p.last_seen)),
          el('td', null, num(p.polls)));
      });
      sec.append(table(['Authenticated identity', 'Proxy id (claimed)', 'Enforcing (claimed)', 'Served', 'Last answer', 'Last seen', 'Polls'], rows, { class: 'pollers' }));
    }

    sec.append(el('h3', null, 'Retained revisions'));
    sec.append(table(['Revision', 'Signing key', 'Created', 'Expires', 'Published', 'Size', 'Digest'],
      ch.revisions.map((r) => el('tr', null, el('td', null, r.revision), el('td', null, el('code', null, r.key_id || '—')),
        el('td', null, fmtTime(r.created)), el('td', null, fmtTime(r.expires)), el('td', null, fmtTime(r.published)),
        el('td', null, bytes(r.size)), el('td', null, el('code', { title: r.digest }, short(r.digest))))), { class: 'revisions' }));
    return sec;
  }

  function fact(k, ...v) { return [el('dt', null, k), el('dd', null, v)]; }

  // --- filters -------------------------------------------------------------------

  function filterForm(page, params, extra) {
    const form = el('form', { class: 'filters', id: 'filters', autocomplete: 'off' });
    const grid = el('div', { class: 'filter-grid' });
    for (const f of FILTERS) {
      const id = 'f-' + f.name;
      let input;
      if (f.options) {
        input = el('select', { id, name: f.name }, f.options.map((o) => el('option', { value: o, selected: params.get(f.name) === o }, o || 'any')));
      } else {
        input = el('input', { id, name: f.name, type: 'text', value: params.get(f.name) || '', placeholder: f.hint || '', list: f.values ? id + '-values' : null, spellcheck: 'false' });
      }
      grid.append(el('label', { for: id }, f.label, input));
      if (f.values) grid.append(el('datalist', { id: id + '-values', 'data-column': f.values }));
    }
    const range = el('select', { id: 'f-range', name: 'range' }, RANGES.map(([v, t]) => el('option', { value: v, selected: (params.get('range') || '') === v }, t)));
    grid.append(el('label', { for: 'f-range' }, 'Time range', range));
    if (extra) grid.append(extra);
    form.append(grid, el('div', { class: 'filter-actions' },
      el('button', { type: 'submit', id: 'apply' }, 'Apply filters'),
      el('a', { href: '#/' + page, id: 'reset' }, 'Clear')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (String(v).trim()) p.set(k, String(v).trim());
      go(page, p);
    });
    fillValueLists(form);
    return form;
  }

  // fillValueLists offers the most frequent values of each column.
  function fillValueLists(form) {
    for (const dl of form.querySelectorAll('datalist[data-column]')) {
      api('decisions/values/' + dl.dataset.column, new URLSearchParams({ limit: '50' }))
        .then((vs) => dl.replaceChildren(...vs.map((v) => el('option', { value: v.value }, `${num(v.count)} records`))))
        .catch(() => { /* suggestions are optional */ });
    }
  }

  // --- decision log --------------------------------------------------------------

  async function renderDecisions(view, params, _arg, current) {
    view.append(el('h1', null, 'Decision log'), filterForm('decisions', params));
    const q = apiFilter(params);
    if (params.get('before')) q.set('before', params.get('before'));
    q.set('limit', '50');
    const [page, st] = await Promise.all([api('decisions/search', q), api('status')]);
    if (!current()) return;
    showLogState(st);
    const it = integrityText(st.decision_log);
    view.append(el('p', { class: 'integrity-banner ' + it.cls, id: 'integrity' }, it.text,
      st.decision_log.integrity.problem ? ` — ${st.decision_log.integrity.problem}` : '',
      `. Each record's page checks its inclusion proof against the latest signed checkpoint (${num(st.decision_log.checkpoint.seq)} records).`));
    const indexing = page.indexed < page.head ? ` (index covers ${num(page.indexed)} of ${num(page.head)} records; still indexing)` : '';
    view.append(el('p', { class: 'summary', id: 'summary' }, `${num(page.total)} matching record${page.total === 1 ? '' : 's'}${indexing}`,
      page.records.length ? `, showing seq ${page.records[0].seq} to ${page.records[page.records.length - 1].seq}` : ''));
    if (!page.records.length) {
      view.append(el('p', { class: 'muted', id: 'no-records' }, 'No record matches these filters.'));
      return;
    }
    const rows = page.records.map((sr) => recordRow(sr));
    view.append(table(['Seq', 'Time', 'Decision', 'Rule', 'Subject', 'Device', 'Request', 'Revision', 'Proxy', 'Chain'], rows, { class: 'records', id: 'records' }));
    const nav = el('div', { class: 'pager' });
    if (params.get('before')) {
      const p = new URLSearchParams(params);
      p.delete('before');
      nav.append(el('a', { href: '#/decisions?' + p, id: 'newest' }, '« Newest'));
    }
    if (page.next) {
      const p = new URLSearchParams(params);
      p.set('before', page.next);
      nav.append(el('a', { href: '#/decisions?' + p, id: 'older' }, 'Older »'));
    }
    view.append(nav);
  }

  function parseRecord(sr) {
    try {
      const r = typeof sr.record === 'string' ? JSON.parse(sr.record) : sr.record;
      return r && typeof r === 'object' && !Array.isArray(r) ? r : { unreadable: String(sr.record) };
    } catch (_) {
      return { unreadable: String(sr.record) };
    }
  }

  const str = (v) => (v === undefined || v === null ? '' : typeof v === 'string' ? v : JSON.stringify(v));

  function recordRow(sr) {
    const r = parseRecord(sr);
    const rules = Array.isArray(r.rule_ids) ? r.rule_ids.map(str) : [];
    const open = () => go('record/' + sr.seq);
    return el('tr', { class: 'record', 'data-seq': sr.seq, tabindex: '0', onclick: open, onkeydown: (e) => { if (e.key === 'Enter') open(); } },
      el('td', null, el('a', { href: '#/record/' + sr.seq }, sr.seq)),
      el('td', { class: 'time' }, fmtTime(str(r.time))),
      el('td', null, decisionBadge(str(r.decision))),
      el('td', { class: 'rule' }, rules.length ? rules.join(', ') : el('span', { class: 'muted' }, '(none)')),
      el('td', { class: 'subject' }, str(r.subject)),
      el('td', null, str(r.device_id)),
      el('td', { class: 'request' }, str(r.method), ' ', str(r.path)),
      el('td', null, str(r.bundle_revision)),
      el('td', { class: 'proxy' }, str(r.proxy)),
      el('td', null, sr.verified ? el('span', { class: 'badge ok' }, 'verified') : el('span', { class: 'badge warn' }, 'unverified')));
  }

  // --- one record --------------------------------------------------------------------

  async function renderRecord(view, _params, arg) {
    const seq = String(arg || '').replace(/[^0-9]/g, '');
    view.append(el('p', null, el('a', { href: '#/decisions', id: 'back', onclick: (e) => { if (history.length > 1) { e.preventDefault(); history.back(); } } }, '« Decision log')));
    const ans = await api('decisions/records/' + seq);
    const r = parseRecord(ans);
    view.append(el('h1', null, `Record seq ${ans.seq} `, decisionBadge(str(r.decision))));
    view.append(el('h2', null, 'Integrity'));
    // One row per check: the inclusion proof against the latest signed
    // checkpoint, then the tree verification of the records.
    view.append(table(['Check', 'Status', 'Detail'], ans.checks.map((c) =>
      el('tr', { 'data-check': c.name }, el('td', null, c.name),
        el('td', null, el('span', { class: 'badge ' + (c.status === 'verified' ? 'ok' : c.status === 'failed' ? 'bad' : 'warn') }, c.status)),
        el('td', null, c.detail))), { class: 'checks', id: 'checks' }));
    view.append(el('h2', null, 'Fields'));
    const keys = Object.keys(r).sort();
    view.append(table(['Field', 'Value'], keys.map((k) => el('tr', { 'data-field': k }, el('th', { scope: 'row' }, el('code', null, k)),
      el('td', null, typeof r[k] === 'object' && r[k] !== null ? el('code', null, JSON.stringify(r[k])) : str(r[k])))), { class: 'fields', id: 'fields' }));
    view.append(el('h2', null, 'Stored line'), el('pre', { class: 'raw', id: 'raw' }, JSON.stringify(r, null, 2)));
  }

  // --- registry ------------------------------------------------------------------------

  const KINDS = { devices: 'Devices', workloads: 'Workloads' };
  // Registry filters, in form order; names are the API's query parameters.
  const REG_FILTERS = [
    { name: 'prefix', label: 'Id prefix', hint: 'inv- or spiffe://grid.example/ns/' },
    { name: 'class', label: 'Class', kinds: ['devices'] },
    { name: 'vendor', label: 'Vendor', kinds: ['devices'] },
    { name: 'label', label: 'Label', hint: 'key=value' },
  ];

  function regKind(params) { return KINDS[params.get('kind')] ? params.get('kind') : 'devices'; }

  async function renderRegistry(view, params, _arg, current) {
    const kind = regKind(params);
    view.append(el('h1', null, 'Registry'),
      el('nav', { class: 'tabs', 'aria-label': 'Registry kinds' }, Object.entries(KINDS).map(([k, t]) =>
        el('a', { href: '#/registry?kind=' + k, id: 'tab-' + k, class: k === kind ? 'active' : null, 'aria-current': k === kind ? 'page' : null }, t))));
    const q = new URLSearchParams();
    for (const name of ['organisation', 'prefix', 'class', 'vendor', 'label', 'after']) {
      const v = params.get(name);
      if (v && (kind === 'devices' || (name !== 'class' && name !== 'vendor'))) q.set(name, v);
    }
    q.set('limit', '50');
    const form = el('form', { class: 'filters', id: 'filters', autocomplete: 'off' });
    const grid = el('div', { class: 'filter-grid' });
    const org = el('select', { id: 'f-organisation', name: 'organisation' }, el('option', { value: '' }, 'any'));
    grid.append(el('label', { for: 'f-organisation' }, 'Organisation', org));
    for (const f of REG_FILTERS) {
      if (f.kinds && !f.kinds.includes(kind)) continue;
      grid.append(el('label', { for: 'f-' + f.name }, f.label,
        el('input', { id: 'f-' + f.name, name: f.name, type: 'text', value: params.get(f.name) || '', placeholder: f.hint || '', spellcheck: 'false' })));
    }
    form.append(el('input', { type: 'hidden', name: 'kind', value: kind }), grid, el('div', { class: 'filter-actions' },
      el('button', { type: 'submit', id: 'apply' }, 'Apply filters'),
      el('a', { href: '#/registry?kind=' + kind, id: 'reset' }, 'Clear')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (String(v).trim()) p.set(k, String(v).trim());
      go('registry', p);
    });
    view.append(form);
    const page = await api('registry/' + kind, q);
    if (!current()) return;
    for (const o of page.organisations) org.append(el('option', { value: o, selected: params.get('organisation') === o }, o));
    view.append(el('p', { class: 'muted', id: 'registry-scope' },
      'Auditors see the entries of every organisation, read-only. The registry API (/v1/registry/) serves each organisation its own.'));
    const after = params.get('after') ? ` after ${params.get('after')}` : '';
    view.append(el('p', { class: 'summary', id: 'summary' },
      `${num(page.items.length)} ${kind}${after}, sorted by id${page.next_page_token ? '; more on the next page' : ''}`));
    if (!page.items.length) {
      view.append(el('p', { class: 'muted', id: 'no-entries' }, `No ${kind.slice(0, -1)} matches these filters.`));
    } else if (kind === 'devices') {
      view.append(table(['Id', 'Organisation', 'Class', 'Vendor', 'Firmware', 'Credential', 'Labels', 'Updated', 'Generation'],
        page.items.map((it) => entryRow(kind, it, [it.class, it.vendor, it.firmware || 'any', it.credential])), { class: 'registry devices', id: 'entries' }));
    } else {
      view.append(table(['SPIFFE ID', 'Organisation', 'Versions', 'Labels', 'Updated', 'Generation'],
        page.items.map((it) => entryRow(kind, it, [it.versions || 'any'])), { class: 'registry workloads', id: 'entries' }));
    }
    const nav = el('div', { class: 'pager' });
    if (params.get('after')) {
      const p = new URLSearchParams(params);
      p.delete('after');
      nav.append(el('a', { href: '#/registry?' + p, id: 'first' }, '« First'));
    }
    if (page.next_page_token) {
      const p = new URLSearchParams(params);
      p.set('kind', kind);
      p.set('after', page.next_page_token);
      nav.append(el('a', { href: '#/registry?' + p, id: 'next' }, 'Next »'));
    }
    view.append(nav);
  }

  function entryHref(kind, id) { return '#/entry?' + new URLSearchParams({ kind, id }); }

  function labelList(labels) {
    const ks = Object.keys(labels || {}).sort();
    if (!ks.length) return el('span', { class: 'muted' }, '—');
    return el('ul', { class: 'labels' }, ks.map((k) => el('li', null, el('code', null, k + '=' + str(labels[k])))));
  }

  function entryRow(kind, it, cells) {
    const open = () => { location.hash = entryHref(kind, it.id); };
    return el('tr', { class: 'entry', 'data-id': it.id, tabindex: '0', onclick: open, onkeydown: (e) => { if (e.key === 'Enter') open(); } },
      el('td', { class: 'id' }, el('a', { href: entryHref(kind, it.id) }, el('code', null, it.id))),
      el('td', null, it.organisation),
      cells.map((c) => el('td', null, str(c))),
      el('td', null, labelList(it.labels)),
      el('td', { class: 'time', title: fmtTime(it.updated) }, ago(it.updated)),
      el('td', null, it.generation));
  }

  async function renderEntry(view, params) {
    const kind = regKind(params);
    const id = params.get('id') || '';
    view.append(el('p', null, el('a', { href: '#/registry?kind=' + kind, id: 'back' }, '« ' + KINDS[kind])));
    const v = await api('registry/' + kind + '/' + encodeURIComponent(id));
    view.append(el('h1', null, kind === 'devices' ? 'Device ' : 'Workload ', el('code', { id: 'entry-id' }, v.id), ' ',
      v.registered ? el('span', { class: 'badge ok' }, 'registered') : el('span', { class: 'badge bad', id: 'deregistered' }, 'not registered')));
    if (v.registered) {
      view.append(el('dl', { class: 'facts', id: 'entry-facts' },
        fact('Organisation', v.organisation),
        fact('Generation (ETag)', String(v.generation)),
        fact('Registered', fmtTime(v.created)),
        fact('Last changed', fmtTime(v.updated), ' (', ago(v.updated), ')')));
    } else {
      view.append(el('p', { class: 'warning' }, 'This entry is not in the registry now (deregistered, or never registered): its history below is from the decision log.'));
    }
    if (v.credential) view.append(el('h2', null, 'Credential'), credentialTable(v.credential));
    if (v.spec) {
      view.append(el('h2', null, 'Fields'));
      const keys = Object.keys(v.spec).sort();
      view.append(table(['Field', 'Value'], keys.map((k) => el('tr', { 'data-field': k }, el('th', { scope: 'row' }, el('code', null, k)),
        el('td', null, k === 'labels' && v.spec[k] && typeof v.spec[k] === 'object' ? labelList(v.spec[k])
          : typeof v.spec[k] === 'object' && v.spec[k] !== null ? el('code', null, JSON.stringify(v.spec[k])) : str(v.spec[k])))), { class: 'fields', id: 'fields' }));
    }
    view.append(el('h2', null, 'Channels and revisions'));
    if (v.channels && v.channels.length) {
      view.append(table(['Channel', 'Revision'], v.channels.map((c) => el('tr', null, el('td', null, el('code', null, c.channel)), el('td', null, c.revision))), { id: 'channels' }));
    } else {
      view.append(el('p', { class: 'muted', id: 'channels-note' }, v.channels_note || 'No channel revision includes this entry.'));
    }
    view.append(el('h2', null, 'Audit history'));
    const h = v.history;
    const link = new URLSearchParams(h.filter);
    view.append(el('p', { id: 'history-scope' },
      h.exact ? 'Registry records of this entry in the decision log, newest first. ' : `Registry records of this entry among the newest ${num(h.scanned)} registry records${h.complete ? ' (all of them)' : ''}. `,
      el('a', { href: '#/decisions?' + link, id: 'history-link' }, h.exact ? 'Open them in the decision log' : 'Open every registry record in the decision log'),
      h.complete ? '' : el('span', { class: 'muted' }, ' Older records may exist beyond those read.')));
    if (!h.records.length) {
      view.append(el('p', { class: 'muted', id: 'no-history' }, 'No registry record of this entry was found.'));
      return;
    }
    view.append(table(['Seq', 'Time', 'Change', 'By', 'Organisation', 'Changed fields', 'Chain'], h.records.map((sr) => {
      const r = parseRecord(sr);
      return el('tr', { class: 'history', 'data-seq': sr.seq },
        el('td', null, el('a', { href: '#/record/' + sr.seq }, sr.seq)),
        el('td', { class: 'time' }, fmtTime(str(r.time))),
        el('td', null, el('span', { class: 'badge' }, str(r.registry_op))),
        el('td', null, str(r.subject)),
        el('td', null, str(r.organisation)),
        el('td', { class: 'changed' }, changedFields(r)),
        el('td', null, sr.verified ? el('span', { class: 'badge ok' }, 'verified') : el('span', { class: 'badge warn' }, 'unverified')));
    }), { class: 'history', id: 'history' }));
  }

  function credentialTable(c) {
    const rows = c.type === 'jwk'
      ? [['Type', 'public key (JWK)'], ['Key type', c.key_type], ['Key id', c.kid], ['Thumbprint (RFC 7638, SHA-256)', c.thumbprint]]
      : c.type === 'x509'
        ? [['Type', 'X.509 certificate'], ['Subject', c.subject], ['Issuer', c.issuer], ['Serial', c.serial], ['Key type', c.key_type],
          ['Valid from', fmtTime(c.not_before)], ['Expires', [fmtTime(c.not_after), ' ', el('span', { class: c.expired ? 'badge bad' : 'badge ok' }, c.expired ? 'expired' : 'valid', ' (', ago(c.not_after), ')')]],
          ['SHA-256 fingerprint', c.fingerprint]]
        : [['Type', 'none']];
    if (c.problem) rows.push(['Problem', c.problem]);
    return table(['', ''], rows.filter((r) => r[1]).map(([k, val]) => el('tr', null, el('th', { scope: 'row' }, k), el('td', null, val))), { class: 'fields credential', id: 'credential' });
  }

  // changedFields names the spec fields a registry record changed.
  function changedFields(r) {
    const spec = (x) => (x && typeof x === 'object' && x.spec && typeof x.spec === 'object' ? x.spec : {});
    const b = spec(r.before), a = spec(r.after);
    if (!r.before) return el('span', { class: 'muted' }, r.registry_op === 'create' ? 'registered' : str(r.reason));
    if (!r.after) return el('span', { class: 'muted' }, 'deregistered');
    const ks = [...new Set([...Object.keys(b), ...Object.keys(a)])].sort().filter((k) => JSON.stringify(b[k]) !== JSON.stringify(a[k]));
    return ks.length ? ks.join(', ') : el('span', { class: 'muted' }, 'no field');
  }

  // --- charts ------------------------------------------------------------------------

  async function renderCharts(view, params, _arg, current) {
    const buckets = ['30', '60', '120'].includes(params.get('buckets')) ? params.get('buckets') : '60';
    const bsel = el('select', { id: 'f-buckets', name: 'buckets' }, ['30', '60', '120'].map((b) => el('option', { value: b, selected: b === buckets }, b + ' buckets')));
    view.append(el('h1', null, 'Charts'), filterForm('charts', params, el('label', { for: 'f-buckets' }, 'Resolution', bsel)));
    const q = apiFilter(params);
    q.set('buckets', buckets);
    q.set('top', '8');
    const dq = apiFilter(params);
    dq.set('decision', 'dry-run-deny');
    dq.set('buckets', '1');
    dq.set('top', '12');
    const wantDry = !params.get('decision') || params.get('decision') === 'dry-run-deny';
    const [stats, dry] = await Promise.all([api('decisions/stats', q), wantDry ? api('decisions/stats', dq) : null]);
    if (!current()) return;
    const xs = stats.series.map((b) => new Date(b.start));
    const width = stats.bucket;
    view.append(el('p', { class: 'summary', id: 'summary' }, `${num(stats.total)} matching records, ${num(stats.series.length)} buckets of ${dur(width)} from ${fmtTime(stats.from)}`,
      stats.out_of_range ? `; ${num(stats.out_of_range)} outside the charted range (no or implausible time)` : '',
      stats.indexed < stats.head ? `; index covers ${num(stats.indexed)} of ${num(stats.head)} records` : ''));

    const ruleSeries = stats.rules.map((r) => ({ name: r.rule, values: r.counts, total: r.total }));
    if (stats.other) ruleSeries.push({ name: 'other rules', values: stats.other.counts, total: stats.other.total });
    view.append(figure('chart-rules', 'Decisions per rule over time', `records per ${dur(width)}; a record naming several rules counts for each`,
      ruleSeries.length ? lineChart('rules', xs, ruleSeries, (v) => num(v)) : empty()));

    const rate = stats.series.map((b) => (b.total ? (100 * b.deny) / b.total : null));
    const totals = stats.series.reduce((a, b) => ({ allow: a.allow + b.allow, deny: a.deny + b.deny, dry: a.dry + b.dry_run, error: a.error + b.error }), { allow: 0, deny: 0, dry: 0, error: 0 });
    const overall = stats.total - stats.out_of_range ? (100 * totals.deny) / (stats.total - stats.out_of_range) : 0;
    view.append(figure('chart-deny-rate', 'Deny rate', `denied share of the records in each bucket; overall ${overall.toFixed(1)}% (${num(totals.deny)} denied, ${num(totals.allow)} allowed, ${num(totals.dry)} dry-run denies, ${num(totals.error)} errors)`,
      stats.total ? lineChart('deny-rate', xs, [{ name: 'deny rate', values: rate, total: totals.deny }], (v) => v.toFixed(1) + '%', 100) : empty()));

    if (dry) {
      view.append(figure('chart-dry-run', 'Dry-run hits per rule', 'requests a dry-run rule would have denied (not enforced)',
        dry.rules.length ? barChart('dry-run', dry.rules.map((r) => ({ name: r.rule, value: r.dry_run }))) : empty('No dry-run denies match these filters.')));
    }
  }

  function dur(s) {
    if (s % 86400 === 0) return s / 86400 + ' d';
    if (s % 3600 === 0) return s / 3600 + ' h';
    if (s % 60 === 0) return s / 60 + ' min';
    return s + ' s';
  }

  function empty(text) { return el('p', { class: 'muted empty' }, text || 'No records match these filters.'); }

  function figure(id, title, caption, body) {
    return el('figure', { class: 'chart', id }, el('h2', null, title), body, el('figcaption', null, caption));
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function timeLabel(d, spanMs) {
    const iso = d.toISOString();
    if (spanMs <= 864e5) return iso.slice(11, 16);
    if (spanMs <= 30 * 864e5) return iso.slice(5, 10) + ' ' + iso.slice(11, 16);
    return iso.slice(0, 10);
  }

  // lineChart draws one polyline per series over the time buckets xs.
  function lineChart(name, xs, series, fmt, fixedMax) {
    const W = 820, H = 280, L = 64, R = 16, T = 14, B = 34;
    let max = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
    const yMax = fixedMax || niceMax(max);
    const n = xs.length;
    const x = (i) => L + (n > 1 ? (i * (W - L - R)) / (n - 1) : (W - L - R) / 2);
    const y = (v) => H - B - (v / yMax) * (H - T - B);
    const g = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'linechart', role: 'img', 'aria-label': `${name} chart`, 'data-chart': name, 'data-ymax': yMax });
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      const v = yMax * f;
      g.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: f === 0 ? 'axis' : 'grid' }),
        svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, fmt(v)));
    }
    const span = n > 1 ? xs[n - 1] - xs[0] : 0;
    const ticks = n > 1 ? [0, Math.floor((n - 1) / 3), Math.floor((2 * (n - 1)) / 3), n - 1] : [0];
    for (const i of ticks) {
      if (!xs[i]) continue;
      g.append(svg('line', { x1: x(i), x2: x(i), y1: H - B, y2: H - B + 4, class: 'axis' }),
        svg('text', { x: x(i), y: H - B + 18, 'text-anchor': 'middle', class: 'tick' }, timeLabel(xs[i], span)));
    }
    series.forEach((s, si) => {
      const color = PALETTE[si % PALETTE.length];
      let d = '';
      let pen = false;
      const dots = svg('g', { class: 'points' });
      s.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        d += (pen ? ' L ' : ' M ') + x(i).toFixed(1) + ' ' + y(v).toFixed(1);
        pen = true;
        dots.append(svg('circle', { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5, fill: color, 'data-value': v },
          svg('title', null, `${s.name} · ${fmtTime(xs[i].toISOString())}: ${fmt(v)}`)));
      });
      g.append(svg('path', { d: d.trim(), class: 'series', stroke: color, fill: 'none', 'data-name': s.name, 'data-total': s.total }), dots);
    });
    const legend = el('ul', { class: 'legend' }, series.map((s, si) => el('li', { 'data-name': s.name },
      svg('svg', { width: 12, height: 12, class: 'swatch' }, svg('rect', { width: 12, height: 12, rx: 2, fill: PALETTE[si % PALETTE.length] })),
      ' ', s.name, el('span', { class: 'muted' }, ` ${num(s.total)}`))));
    return el('div', { class: 'chart-body' }, g, legend);
  }

  // barChart draws one horizontal bar per item.
  function barChart(name, items) {
    const W = 820, row = 26, L = 260, R = 70, T = 6;
    const H = T * 2 + row * items.length;
    const max = niceMax(Math.max(...items.map((i) => i.value)));
    const g = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'barchart', role: 'img', 'aria-label': `${name} chart`, 'data-chart': name });
    items.forEach((it, i) => {
      const w = ((W - L - R) * it.value) / max;
      const yy = T + i * row;
      const label = it.name.length > 38 ? it.name.slice(0, 37) + '…' : it.name;
      g.append(svg('text', { x: L - 8, y: yy + row / 2 + 4, 'text-anchor': 'end', class: 'bar-label' }, label, svg('title', null, it.name)),
        svg('rect', { x: L, y: yy + 4, width: Math.max(1, w).toFixed(1), height: row - 8, rx: 3, class: 'bar', 'data-name': it.name, 'data-value': it.value },
          svg('title', null, `${it.name}: ${num(it.value)}`)),
        svg('text', { x: L + w + 6, y: yy + row / 2 + 4, class: 'bar-value' }, num(it.value)));
    });
    return el('div', { class: 'chart-body' }, g);
  }

  // --- start ---------------------------------------------------------------------------

  function start() {
    const nav = document.getElementById('nav');
    nav.replaceChildren(...PAGES.map((p) => el('a', { href: '#/' + p.id, 'data-page': p.id }, p.title)));
    window.addEventListener('hashchange', route);
    route();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();

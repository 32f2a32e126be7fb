// The Weir console (core/src/console): sign in with a read token, search a repository
// (histogram, events, fields, aggregates, live), see the cluster. Hand-written, no
// framework and no build step; served with a Content-Security-Policy that allows only
// this file and app.css, so nothing here may use inline script, eval or another origin.
//
// It is a client of the core's read API: POST /graphql ({searchDomains{name}}), the query
// jobs (POST …/queryjobs, GET and DELETE …/queryjobs/{id}) and GET /api/v1/cluster. The
// token lives in sessionStorage (this tab only) and goes out as `Authorization: Bearer`;
// it never enters the URL, whose hash keeps only the repository, query and range.
'use strict';

(() => {
  const TOKEN_KEY = 'weir.readToken';
  const PRESETS = ['15m', '1h', '4h', '24h', '7d', '30d'];
  const EVENT_LIMIT = 200;
  const CLUSTER_REFRESH_MS = 5000;
  const PALETTE = ['#0b5cad', '#d1495b', '#2e933c', '#edae49', '#6a4c93', '#00798c', '#8d6a9f', '#c1666b', '#3d5a80', '#7a9e7e'];
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  const state = {
    repos: [],
    run: null, // the search in progress or shown: see runSearch
    lastHash: null,
    clusterTimer: null,
    clusterSeq: 0,
  };

  // ---- the API -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(method, path, body, options = {}) {
    const headers = { Authorization: 'Bearer ' + token(), Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        keepalive: Boolean(options.keepalive),
      });
    } catch (error) {
      throw new ApiError(0, 'the core did not answer (' + error.message + '); is it running and reachable?');
    }
    const text = await response.text();
    if (!response.ok) {
      let message = text.trim();
      try {
        const parsed = JSON.parse(text);
        if (parsed && Array.isArray(parsed.errors)) message = parsed.errors.map((e) => e.message).join('\n');
      } catch (_) {
        // text/plain: the read API's errors are sentences already
      }
      throw new ApiError(response.status, message || response.status + ' ' + response.statusText);
    }
    return text ? JSON.parse(text) : null;
  }

  // A token the core does not know (401, or 403 that is not about one repository).
  function isTokenRefused(error) {
    return error.status === 401 || (error.status === 403 && !/may not read repository/.test(error.message));
  }

  // Signs out when the token was refused; whether it was.
  function signedOutBy(error) {
    if (!isTokenRefused(error)) return false;
    signOut('The core refused this token: ' + error.message);
    return true;
  }

  // ---- times and numbers ---------------------------------------------------------------

  const pad = (n, width = 2) => String(n).padStart(width, '0');

  function localTime(ms, withMillis = true) {
    const d = new Date(ms);
    const text = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return withMillis ? `${text}.${pad(d.getMilliseconds(), 3)}` : text;
  }

  const utcTime = (ms) => new Date(ms).toISOString().replace('T', ' ').replace('Z', ' UTC');

  // A <time> in the browser's zone, UTC on hover.
  function timeElement(ms, withMillis = true) {
    const element = document.createElement('time');
    element.dateTime = new Date(ms).toISOString();
    element.title = utcTime(ms);
    element.textContent = localTime(ms, withMillis);
    return element;
  }

  // `datetime-local` value (local time) <-> epoch ms.
  const toLocalInput = (ms) => localTime(ms, false).replace(' ', 'T');
  const fromLocalInput = (value) => (value ? new Date(value).getTime() : NaN);

  const number = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));

  function bytes(n) {
    if (n === null || n === undefined) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = Number(n);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(1)) + ' ' + units[unit];
  }

  function ago(ms) {
    const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (seconds < 90) return seconds + ' s ago';
    if (seconds < 5400) return Math.round(seconds / 60) + ' min ago';
    if (seconds < 172800) return Math.round(seconds / 3600) + ' h ago';
    return Math.round(seconds / 86400) + ' d ago';
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A table from column heads ({label, num}) and rows of cells (text or nodes).
  function fillTable(table, columns, rows) {
    table.textContent = '';
    const head = table.createTHead().insertRow();
    for (const column of columns) {
      const th = element('th', column.num ? 'num' : '', column.label);
      th.scope = 'col';
      head.append(th);
    }
    const body = table.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      row.forEach((cell, i) => {
        const td = tr.insertCell();
        if (columns[i] && columns[i].num) td.className = 'num';
        if (cell instanceof Node) td.append(cell);
        else td.textContent = cell === null || cell === undefined ? '' : String(cell);
      });
    }
  }

  // ---- views and routing ---------------------------------------------------------------

  function show(view) {
    for (const name of ['signin', 'search', 'cluster']) $(name + '-view').hidden = name !== view;
    $('nav').hidden = view === 'signin';
    for (const name of ['search', 'cluster']) {
      if (name === view) $('nav-' + name).setAttribute('aria-current', 'page');
      else $('nav-' + name).removeAttribute('aria-current');
    }
    document.title = { signin: 'Sign in · Weir', search: 'Search · Weir', cluster: 'Cluster · Weir' }[view];
  }

  function parseHash() {
    const hash = location.hash.replace(/^#/, '');
    const question = hash.indexOf('?');
    const path = question < 0 ? hash : hash.slice(0, question);
    const params = new URLSearchParams(question < 0 ? '' : hash.slice(question + 1));
    return { page: path === '/cluster' ? 'cluster' : 'search', params };
  }

  function route() {
    if (!token()) {
      stopCluster();
      show('signin');
      $('token').focus();
      return;
    }
    const { page, params } = parseHash();
    if (page === 'cluster') {
      show('cluster');
      startCluster();
      return;
    }
    stopCluster();
    show('search');
    const hash = location.hash;
    if (hash !== state.lastHash && (params.has('q') || params.has('repo'))) {
      applyParams(params);
      runSearch();
    } else if (!state.run) {
      if (!$('repo').value && state.repos.length) $('repo').value = state.repos[0];
      if ($('repo').value) runSearch();
    }
  }

  // ---- sign-in -------------------------------------------------------------------------

  async function loadRepositories() {
    const answer = await api('POST', '/graphql', { query: '{searchDomains{name}}' });
    state.repos = ((answer && answer.data && answer.data.searchDomains) || []).map((d) => d.name);
    const list = $('repo-list');
    list.textContent = '';
    for (const name of state.repos) {
      const option = document.createElement('option');
      option.value = name;
      list.append(option);
    }
    if (!$('repo').value && state.repos.length) $('repo').value = state.repos[0];
    $('repo').placeholder = state.repos.length ? '' : 'repository name';
  }

  async function signIn(event) {
    event.preventDefault();
    const value = $('token').value.trim();
    const message = $('signin-error');
    message.hidden = true;
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('signin').disabled = true;
    try {
      await loadRepositories();
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      message.textContent = isTokenRefused(error)
        ? 'The core refused this token: ' + error.message
        : 'Could not sign in: ' + error.message;
      message.hidden = false;
      $('token').select();
      return;
    } finally {
      $('signin').disabled = false;
    }
    $('token').value = '';
    route();
  }

  function signOut(reason) {
    stopSearch();
    stopCluster();
    sessionStorage.removeItem(TOKEN_KEY);
    state.repos = [];
    state.lastHash = null;
    clearResults();
    const message = $('signin-error');
    message.textContent = reason || '';
    message.hidden = !reason;
    route();
  }

  // ---- the search form and the URL -----------------------------------------------------

  function readForm() {
    const repo = $('repo').value.trim();
    const q = $('query').value;
    const range = $('range').value;
    const live = $('live').checked;
    const request = { repo, q, range, live };
    if (!repo) return { error: 'choose a repository' };
    if (range === 'custom') {
      request.start = exactOrInput($('range-start'));
      request.end = exactOrInput($('range-end'));
      if (!Number.isFinite(request.start) || !Number.isFinite(request.end)) return { error: 'give the custom range a start and an end' };
      if (request.start >= request.end) return { error: "the custom range's start is not before its end" };
    }
    return { request };
  }

  function searchHash(request) {
    const params = new URLSearchParams();
    params.set('repo', request.repo);
    params.set('q', request.q);
    if (request.range === 'custom') {
      params.set('start', String(request.start));
      params.set('end', String(request.end));
    } else {
      params.set('range', request.range);
    }
    if (request.live) params.set('live', '1');
    return '#/search?' + params.toString();
  }

  // A range from a link keeps its milliseconds (the inputs show whole seconds) until the
  // user edits the input.
  function exactOrInput(input) {
    const exact = Number(input.dataset.exact);
    if (input.dataset.exact && input.dataset.shown === input.value && Number.isFinite(exact)) return exact;
    return fromLocalInput(input.value);
  }

  function setRangeInput(input, ms) {
    input.value = toLocalInput(ms);
    input.dataset.exact = String(ms);
    input.dataset.shown = input.value;
  }

  function applyParams(params) {
    if (params.has('repo')) $('repo').value = params.get('repo');
    if (params.has('q')) $('query').value = params.get('q');
    const start = Number(params.get('start'));
    const end = Number(params.get('end'));
    if (params.has('start') && params.has('end') && Number.isFinite(start) && Number.isFinite(end)) {
      $('range').value = 'custom';
      setRangeInput($('range-start'), start);
      setRangeInput($('range-end'), end);
    } else if (PRESETS.includes(params.get('range'))) {
      $('range').value = params.get('range');
    }
    $('live').checked = params.get('live') === '1' && $('range').value !== 'custom';
    $('custom-range').hidden = $('range').value !== 'custom';
  }

  // ---- running a search ----------------------------------------------------------------

  // One search: its request, its query jobs, what they answered. A newer search replaces
  // it; every callback checks that its run is still `state.run` before touching the page.
  async function runSearch() {
    const form = readForm();
    if (form.error) {
      showQueryError(form.error);
      return;
    }
    const request = form.request;
    stopSearch();
    clearQueryError();
    const hash = searchHash(request);
    state.lastHash = hash;
    if (location.hash !== hash) history.replaceState(null, '', hash);
    $('nav-search').href = hash;
    const run = { request, jobs: [], main: null, hist: null, histFailed: false, expanded: new Set(), signature: '' };
    state.run = run;
    setStatus(request.live ? 'Starting live search…' : 'Searching…');
    setProgress(run, 0, 0);
    $('cancel').hidden = false;
    $('cancel').textContent = request.live ? 'Stop live' : 'Cancel';
    const body = { queryString: request.q, isLive: request.live, timeZoneOffsetMinutes: -new Date().getTimezoneOffset() };
    if (request.range === 'custom') {
      body.start = request.start;
      body.end = request.end;
    } else {
      body.start = request.range;
    }
    const base = `/api/v1/repositories/${encodeURIComponent(request.repo)}/queryjobs`;
    let created;
    try {
      created = await api('POST', base, body);
    } catch (error) {
      if (run === state.run) failSearch(run, error);
      return;
    }
    if (run !== state.run) {
      deleteJob(base, created.id);
      return;
    }
    run.jobs.push({ base, id: created.id });
    // The histogram: the same filter as a time chart, beside the search. An aggregate
    // search shows none (see onMain), and a query that cannot be charted shows none.
    const histQuery = request.q.trim() ? request.q + '\n| timeChart()' : 'timeChart()';
    api('POST', base, { ...body, queryString: histQuery })
      .then((histJob) => {
        if (run !== state.run) {
          deleteJob(base, histJob.id);
          return;
        }
        run.jobs.push({ base, id: histJob.id });
        poll(run, base, histJob.id, false);
      })
      .catch(() => {
        run.histFailed = true;
        if (run === state.run) $('histogram').hidden = true;
      });
    poll(run, base, created.id, true);
  }

  async function poll(run, base, id, isMain) {
    while (run === state.run) {
      let result;
      try {
        result = await api('GET', `${base}/${id}`);
      } catch (error) {
        if (run !== state.run) return;
        if (isMain) failSearch(run, error);
        else {
          run.histFailed = true;
          $('histogram').hidden = true;
        }
        return;
      }
      if (run !== state.run) return;
      if (isMain) onMain(run, result);
      else onHistogram(run, result);
      if (result.done && !run.request.live) {
        forgetJob(run, base, id);
        deleteJob(base, id);
        return;
      }
      const after = result.metaData && result.metaData.pollAfter;
      await sleep(Math.max(after || 250, 200));
    }
  }

  function forgetJob(run, base, id) {
    run.jobs = run.jobs.filter((job) => !(job.base === base && job.id === id));
  }

  function deleteJob(base, id) {
    api('DELETE', `${base}/${id}`, undefined, { keepalive: true }).catch(() => {
      // gone already, or expires when not polled
    });
  }

  // Ends the search on the page and deletes its jobs on the core.
  function stopSearch() {
    const run = state.run;
    if (!run) return;
    state.run = null;
    for (const job of run.jobs) deleteJob(job.base, job.id);
    run.jobs = [];
    $('progress').hidden = true;
    $('cancel').hidden = true;
  }

  function cancelSearch() {
    const run = state.run;
    if (!run) return;
    const wasLive = run.request.live;
    const finished = Boolean(run.main && run.main.done);
    stopSearch();
    // Keep what is shown; say that nothing more comes.
    setStatus(wasLive ? 'Live search stopped. ' + $('status').textContent : finished ? $('status').textContent : 'Cancelled.');
    if (wasLive) $('live').checked = false;
    state.run = null;
  }

  function failSearch(run, error) {
    stopSearch();
    if (signedOutBy(error)) return;
    // Nothing below the error: an old result under it would read as this query's.
    clearResults();
    showQueryError(error.message);
  }

  function setStatus(text) {
    $('status').textContent = text;
  }

  function setProgress(run, done, total) {
    const box = $('progress');
    box.hidden = false;
    const bar = $('progress-bar');
    if (total > 0) {
      bar.max = total;
      bar.value = done;
      $('progress-text').textContent = `${number(done)} of ${number(total)} segments read`;
    } else {
      bar.removeAttribute('value');
      $('progress-text').textContent = 'starting…';
    }
  }

  function onMain(run, result) {
    const meta = result.metaData || {};
    run.main = result;
    if (!result.done) {
      setProgress(run, meta.workDone || 0, meta.totalWork || 0);
      return;
    }
    if (!run.request.live) {
      $('progress').hidden = true;
      $('cancel').hidden = true;
    } else {
      $('progress').hidden = true;
    }
    const events = result.events || [];
    // Which query the results below are of (a newer search replaces them when it answers).
    $('output').dataset.query = run.request.q;
    const signature = JSON.stringify([meta.isAggregate, events]);
    if (signature !== run.signature) {
      run.signature = signature;
      // head(), tail() and sort() count as aggregates but keep whole events: a list.
      const wholeEvents = events.length > 0 && events.every((e) => '@rawstring' in e && '@timestamp' in e);
      if (meta.isAggregate && !wholeEvents) renderAggregate(events, meta.fieldOrder || []);
      else renderEvents(run, events, Boolean(meta.isAggregate));
    }
    if (meta.isAggregate) $('histogram').hidden = true;
    else if (run.hist && run.hist.done) renderHistogram(run.hist);
    updateStatus(run);
  }

  function onHistogram(run, result) {
    run.hist = result;
    if (result.done && run.main && run.main.done && !(run.main.metaData || {}).isAggregate) {
      renderHistogram(result);
      updateStatus(run);
    }
  }

  function updateStatus(run) {
    const main = run.main;
    if (!main || !main.done) return;
    const meta = main.metaData || {};
    const n = (main.events || []).length;
    let text;
    if (meta.isAggregate) {
      text = `${number(n)} ${n === 1 ? 'row' : 'rows'}`;
    } else {
      const total = histogramTotal(run.hist);
      text = total !== null && total > n ? `The newest ${number(n)} of ${number(total)} events` : `${number(n)} ${n === 1 ? 'event' : 'events'}`;
    }
    text += ` · ${number(meta.processedEvents || 0)} events read in ${number(meta.timeMillis || 0)} ms`;
    if (run.request.live) text = 'Live, updated ' + localTime(Date.now(), false) + ' · ' + text;
    const warnings = (meta.warnings || []).map((w) => w.message).filter(Boolean);
    if (warnings.length) text += ' · ' + warnings.join(' · ');
    setStatus(text);
  }

  function clearResults() {
    $('events').textContent = '';
    $('table').textContent = '';
    $('table-wrap').hidden = true;
    $('chart').hidden = true;
    $('chart').textContent = '';
    $('fields').hidden = true;
    $('fields').textContent = '';
    $('histogram').hidden = true;
    $('histogram-chart').textContent = '';
    document.querySelector('.results').classList.add('no-fields');
    setStatus('');
  }

  // ---- query errors, where the user typed ----------------------------------------------

  function showQueryError(message) {
    const box = $('query-error');
    box.textContent = message;
    const textarea = $('query');
    const at = /\(at character (\d+)\)/.exec(message);
    if (at) {
      const query = textarea.value;
      const position = Math.min(Math.max(Number(at[1]) - 1, 0), query.length);
      const lineStart = query.lastIndexOf('\n', position - 1) + 1;
      let lineEnd = query.indexOf('\n', position);
      if (lineEnd < 0) lineEnd = query.length;
      box.append(element('span', 'caret', query.slice(lineStart, lineEnd) + '\n' + ' '.repeat(position - lineStart) + '^'));
      textarea.focus();
      textarea.setSelectionRange(position, Math.min(position + 1, query.length));
    }
    box.hidden = false;
    textarea.setAttribute('aria-invalid', 'true');
  }

  function clearQueryError() {
    $('query-error').hidden = true;
    $('query-error').textContent = '';
    $('query').removeAttribute('aria-invalid');
  }

  // ---- events, fields ------------------------------------------------------------------

  const eventTime = (event) => Number(event['@timestamp']) || 0;
  const eventKey = (event) => event['@id'] || `${event['@timestamp']}:${event['@rawstring']}`;
  const text = (value) => (typeof value === 'string' ? value : JSON.stringify(value));

  // Newest first, unless the query chose the order (`sort()`, `head()`: `keepOrder`).
  function renderEvents(run, events, keepOrder) {
    $('table-wrap').hidden = true;
    $('chart').hidden = true;
    const ordered = keepOrder ? events.slice() : events.slice().sort((a, b) => eventTime(b) - eventTime(a));
    const sorted = ordered.slice(0, EVENT_LIMIT);
    const list = $('events');
    list.textContent = '';
    if (!sorted.length) {
      list.append(element('li', 'muted empty', 'No events in this range. Try a longer time range or a broader query.'));
    }
    sorted.forEach((event, index) => {
      const key = eventKey(event);
      const item = element('li', 'event');
      const toggle = element('button', 'event-toggle');
      toggle.type = 'button';
      const detailId = 'event-detail-' + index;
      toggle.setAttribute('aria-controls', detailId);
      const time = element('span', 'time');
      time.append(timeElement(eventTime(event)));
      const raw = event['@rawstring'] !== undefined ? event['@rawstring'] : JSON.stringify(event);
      toggle.append(time, element('span', 'raw', raw));
      const detail = element('div', 'event-detail');
      detail.id = detailId;
      const expanded = run.expanded.has(key);
      toggle.setAttribute('aria-expanded', String(expanded));
      detail.hidden = !expanded;
      if (expanded) fillDetail(detail, event);
      toggle.addEventListener('click', () => {
        const open = toggle.getAttribute('aria-expanded') !== 'true';
        toggle.setAttribute('aria-expanded', String(open));
        if (open) {
          run.expanded.add(key);
          if (!detail.childElementCount) fillDetail(detail, event);
        } else {
          run.expanded.delete(key);
        }
        detail.hidden = !open;
      });
      item.append(toggle, detail);
      list.append(item);
    });
    renderFields(events);
  }

  function fillDetail(detail, event) {
    detail.textContent = '';
    if (event['@rawstring'] !== undefined) {
      // As written: pre-wrap keeps its spaces and line breaks.
      detail.append(element('pre', 'rawstring', event['@rawstring']));
    }
    const table = element('table', 'fields-table');
    const body = table.createTBody();
    for (const name of Object.keys(event).sort()) {
      if (name === '@rawstring') continue;
      const row = body.insertRow();
      const th = element('th', '', name);
      th.scope = 'row';
      const td = row.insertCell();
      row.prepend(th);
      if (name === '@timestamp') {
        td.append(timeElement(eventTime(event)), document.createTextNode(` (${event[name]})`));
      } else {
        td.textContent = text(event[name]);
      }
    }
    detail.append(table);
  }

  // Each field's top values over the loaded events; a click adds field=value.
  function renderFields(events) {
    const aside = $('fields');
    aside.textContent = '';
    const skip = new Set(['@rawstring', '@timestamp', '@id', '@ingesttimestamp', '@timezone']);
    const fields = new Map();
    for (const event of events) {
      for (const [name, value] of Object.entries(event)) {
        if (skip.has(name)) continue;
        if (!fields.has(name)) fields.set(name, new Map());
        const values = fields.get(name);
        const shown = text(value);
        values.set(shown, (values.get(shown) || 0) + 1);
      }
    }
    const results = document.querySelector('.results');
    if (!fields.size) {
      aside.hidden = true;
      results.classList.add('no-fields');
      return;
    }
    aside.hidden = false;
    results.classList.remove('no-fields');
    aside.append(element('h2', 'sr', 'Fields'));
    const byPresence = [...fields.entries()]
      .map(([name, values]) => [name, values, [...values.values()].reduce((a, b) => a + b, 0)])
      .sort((a, b) => b[2] - a[2] || a[0].localeCompare(b[0]))
      .slice(0, 40);
    for (const [name, values, present] of byPresence) {
      const heading = element('h2', '', name + ' ');
      heading.append(element('span', 'count', `${present}/${events.length}`));
      aside.append(heading);
      const list = element('ul');
      const top = [...values.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 5);
      for (const [value, count] of top) {
        const item = element('li');
        const button = element('button', 'field-value');
        button.type = 'button';
        button.dataset.field = name;
        button.dataset.value = value;
        button.title = `Add ${filterTerm(name, value)} to the query`;
        button.append(element('span', 'value', value === '' ? '(empty)' : value), element('span', 'n', number(count)));
        button.addEventListener('click', () => addFilter(name, value));
        item.append(button);
        list.append(item);
      }
      aside.append(list);
    }
  }

  function filterTerm(field, value) {
    const bareField = /^[A-Za-z0-9_@#.[\]]+$/.test(field) ? field : JSON.stringify(field);
    const bareValue = /^[A-Za-z0-9_.]+$/.test(value) ? value : JSON.stringify(value);
    return `${bareField}=${bareValue}`;
  }

  function addFilter(field, value) {
    const term = filterTerm(field, value);
    const query = $('query').value.trim();
    $('query').value = query ? `${query} | ${term}` : term;
    runSearch();
  }

  // ---- aggregates: table, and a line chart of _bucket rows -----------------------------

  function renderAggregate(rows, fieldOrder) {
    $('events').textContent = '';
    $('fields').hidden = true;
    document.querySelector('.results').classList.add('no-fields');
    const seen = fieldOrder.length ? fieldOrder.slice() : [];
    for (const row of rows) for (const name of Object.keys(row)) if (!seen.includes(name)) seen.push(name);
    // `_bucket` first, then what the rows are grouped by, then the computed `_` fields
    // (the core lists a row's fields in name order, which puts `_count` first).
    const computed = (name) => name.startsWith('_') && name !== '_bucket';
    const columns = [...seen.filter((n) => n === '_bucket'), ...seen.filter((n) => n !== '_bucket' && !computed(n)), ...seen.filter(computed)];
    const numeric = (name) => rows.length > 0 && rows.every((row) => row[name] === undefined || row[name] === '' || Number.isFinite(Number(row[name])));
    const heads = columns.map((name) => ({ label: name, num: name !== '_bucket' && numeric(name) }));
    const cells = rows.map((row) =>
      columns.map((name) => (name === '_bucket' && row[name] !== undefined ? timeElement(Number(row[name]), false) : row[name] === undefined ? '' : text(row[name]))),
    );
    fillTable($('table'), heads, cells);
    $('table-wrap').hidden = false;
    if (!rows.length) {
      $('chart').hidden = true;
      return;
    }
    if (columns.includes('_bucket')) renderLineChart(rows, columns, numeric);
    else $('chart').hidden = true;
  }

  function renderLineChart(rows, columns, numeric) {
    const values = columns.filter((name) => name !== '_bucket' && numeric(name));
    const keys = columns.filter((name) => name !== '_bucket' && !values.includes(name));
    const series = new Map();
    for (const row of rows) {
      const t = Number(row._bucket);
      for (const value of values) {
        const label = [...keys.map((k) => row[k] ?? ''), values.length > 1 || !keys.length ? value : null].filter((p) => p !== null).join(' · ');
        if (!series.has(label)) series.set(label, []);
        series.get(label).push([t, Number(row[value]) || 0]);
      }
    }
    const figure = $('chart');
    figure.textContent = '';
    if (!series.size) {
      figure.hidden = true;
      return;
    }
    const points = [...series.values()].flat();
    const [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
    const yMax = Math.max(1, ...points.map((p) => p[1]));
    const yMin = Math.min(0, ...points.map((p) => p[1]));
    const [width, height, left, right, top, bottom] = [1000, 220, 56, 10, 10, 26];
    const x = (t) => left + (x1 === x0 ? (width - left - right) / 2 : ((t - x0) / (x1 - x0)) * (width - left - right));
    const y = (v) => top + (1 - (v - yMin) / (yMax - yMin)) * (height - top - bottom);
    const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'Line chart of the result over time' });
    chart.append(svg('line', { class: 'axis', x1: left, y1: y(yMin), x2: width - right, y2: y(yMin) }));
    chart.append(svg('line', { class: 'axis', x1: left, y1: top, x2: left, y2: height - bottom }));
    for (const v of [yMin, (yMin + yMax) / 2, yMax]) {
      chart.append(svg('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, formatTick(v)));
    }
    for (const [t, anchor] of [[x0, 'start'], [(x0 + x1) / 2, 'middle'], [x1, 'end']]) {
      const label = svg('text', { x: x(t), y: height - 8, 'text-anchor': anchor }, localTime(t, false));
      label.append(svg('title', {}, utcTime(t)));
      chart.append(label);
    }
    const legend = element('ul', 'legend');
    [...series.entries()].forEach(([label, line], i) => {
      const color = PALETTE[i % PALETTE.length];
      line.sort((a, b) => a[0] - b[0]);
      const path = svg('polyline', { class: 'series', stroke: color, points: line.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ') });
      path.append(svg('title', {}, label));
      chart.append(path);
      for (const [t, v] of line) {
        const dot = svg('circle', { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 3, fill: color });
        dot.append(svg('title', {}, `${label}: ${v} at ${localTime(t, false)} (${utcTime(t)})`));
        chart.append(dot);
      }
      const item = element('li');
      const swatch = svg('svg', { width: 14, height: 6, 'aria-hidden': 'true', class: 'swatch' });
      swatch.append(svg('rect', { width: 14, height: 6, fill: color }));
      item.append(swatch, document.createTextNode(label || '(all)'));
      legend.append(item);
    });
    figure.append(chart, legend);
    figure.hidden = false;
  }

  function formatTick(v) {
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(0) + 'k';
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  // ---- the histogram -------------------------------------------------------------------

  function histogramBuckets(result) {
    if (!result || !result.done) return null;
    const extra = (result.metaData || {}).extraData || {};
    const first = Number(extra.bucket_first_bucket);
    const last = Number(extra.bucket_last_bucket);
    const span = Number(extra.bucket_span_millis);
    if (!Number.isFinite(first) || !Number.isFinite(last) || !(span > 0)) return null;
    const counts = new Map();
    for (const row of result.events || []) counts.set(Number(row._bucket), (counts.get(Number(row._bucket)) || 0) + (Number(row._count) || 0));
    const buckets = [];
    for (let t = first; t <= last && buckets.length < 2000; t += span) buckets.push([t, counts.get(t) || 0]);
    return { buckets, span, humanized: extra.bucket_span_humanized || `${span} ms` };
  }

  function histogramTotal(result) {
    const grid = histogramBuckets(result);
    return grid ? grid.buckets.reduce((sum, [, n]) => sum + n, 0) : null;
  }

  function renderHistogram(result) {
    const grid = histogramBuckets(result);
    if (state.run) $('histogram').dataset.query = state.run.request.q;
    const box = $('histogram');
    const holder = $('histogram-chart');
    holder.textContent = '';
    if (!grid || !grid.buckets.length) {
      box.hidden = true;
      return;
    }
    const { buckets, span } = grid;
    const max = Math.max(1, ...buckets.map(([, n]) => n));
    const [width, height, left, bottom, top] = [1000, 90, 44, 20, 6];
    const barWidth = (width - left) / buckets.length;
    const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `Events per ${grid.humanized}` });
    chart.append(svg('text', { x: left - 6, y: top + 8, 'text-anchor': 'end' }, formatTick(max)));
    chart.append(svg('text', { x: left - 6, y: height - bottom, 'text-anchor': 'end' }, '0'));
    chart.append(svg('line', { class: 'axis', x1: left, y1: height - bottom, x2: width, y2: height - bottom }));
    buckets.forEach(([t, n], i) => {
      const h = (n / max) * (height - bottom - top);
      const bar = svg('rect', {
        class: 'bar',
        x: (left + i * barWidth + 0.5).toFixed(1),
        y: (height - bottom - h).toFixed(1),
        width: Math.max(barWidth - 1, 0.5).toFixed(1),
        height: h.toFixed(1),
        'data-bucket': t,
        'data-count': n,
      });
      bar.append(svg('title', {}, `${number(n)} events from ${localTime(t, false)} (${utcTime(t)}), ${grid.humanized}`));
      chart.append(bar);
    });
    const firstLabel = svg('text', { x: left, y: height - 4, 'text-anchor': 'start' }, localTime(buckets[0][0], false));
    firstLabel.append(svg('title', {}, utcTime(buckets[0][0])));
    const lastT = buckets[buckets.length - 1][0] + span;
    const lastLabel = svg('text', { x: width, y: height - 4, 'text-anchor': 'end' }, localTime(lastT, false));
    lastLabel.append(svg('title', {}, utcTime(lastT)));
    chart.append(firstLabel, lastLabel);
    holder.append(chart);
    box.hidden = false;
  }

  // ---- the cluster page ----------------------------------------------------------------

  function startCluster() {
    if (state.clusterTimer !== null) return;
    state.clusterTimer = 0;
    refreshCluster(++state.clusterSeq);
  }

  function stopCluster() {
    if (state.clusterTimer) clearTimeout(state.clusterTimer);
    state.clusterTimer = null;
    state.clusterSeq += 1;
  }

  async function refreshCluster(seq) {
    try {
      const status = await api('GET', '/api/v1/cluster');
      if (seq !== state.clusterSeq) return;
      // Before rendering, which shows the storage rule's warning here if there is one.
      $('cluster-error').hidden = true;
      renderCluster(status);
    } catch (error) {
      if (seq !== state.clusterSeq) return;
      if (signedOutBy(error)) return;
      $('cluster-error').textContent = 'The cluster status is not available: ' + error.message;
      $('cluster-error').hidden = false;
    }
    $('cluster-status').textContent = `Refreshed ${localTime(Date.now(), false)}; again every ${CLUSTER_REFRESH_MS / 1000} s.`;
    state.clusterTimer = setTimeout(() => refreshCluster(seq), CLUSTER_REFRESH_MS);
  }

  function renderCluster(status) {
    const nodes = status.nodes || [];
    const alive = nodes.filter((n) => n.alive).length;
    const segments = status.segments || {};
    const rule = status.storage_rule;
    const summary = $('cluster-summary');
    summary.textContent = '';
    const tile = (label, value) => {
      const box = element('div');
      box.append(element('b', '', value), document.createTextNode(label));
      summary.append(box);
    };
    tile('nodes alive', `${alive} / ${nodes.length}`);
    tile('partitions', String((status.partitions || []).length));
    tile('segments', number(segments.registered));
    tile('stored', bytes(segments.bytes));
    tile('storage rule', rule ? `${rule.mode || ''} ×${rule.replication_factor ?? ''}` : 'none yet');
    tile('answered, at Global offset', `${status.answered_by} @ ${number(status.global_applied_offset)}`);
    const warning = status.storage_warning || status.kafka_error;
    if (warning) {
      $('cluster-error').textContent = warning;
      $('cluster-error').hidden = false;
    }
    fillTable(
      $('cluster-nodes'),
      [
        { label: 'Node' },
        { label: 'State' },
        { label: 'Zone' },
        { label: 'Digests' },
        { label: 'HTTP' },
        { label: 'QUIC' },
        { label: 'Last heartbeat' },
        { label: 'Segments', num: true },
        { label: 'Bytes', num: true },
      ],
      nodes.map((n) => {
        const heartbeat = element('span', '', ago(n.last_heartbeat_ms));
        heartbeat.title = `${localTime(n.last_heartbeat_ms)} (${utcTime(n.last_heartbeat_ms)})`;
        return [
          n.node_id,
          element('span', n.alive ? 'alive' : 'dead', n.alive ? 'alive' : 'dead'),
          n.zone,
          n.digest ? 'yes' : 'no',
          n.http,
          n.quic || '–',
          heartbeat,
          number(n.segments),
          bytes(n.bytes),
        ];
      }),
    );
    fillTable(
      $('cluster-partitions'),
      [
        { label: 'Partition', num: true },
        { label: 'Owner' },
        { label: 'Epoch', num: true },
        { label: 'Resume point', num: true },
        { label: 'Safe offset', num: true },
        { label: 'Truncated', num: true },
        { label: 'Kafka low watermark', num: true },
        { label: 'Kafka high watermark', num: true },
        { label: 'Digest lag', num: true },
      ],
      (status.partitions || []).map((p) => [
        p.partition,
        p.owner || '(none)',
        number(p.epoch),
        number(p.resume_point),
        number(p.safe_offset),
        number(p.truncated),
        number(p.kafka_low_watermark),
        number(p.kafka_high_watermark),
        number(p.digest_lag),
      ]),
    );
    const labels = {
      registered: 'registered',
      bytes: 'bytes',
      staged: 'staged (waiting to replace others)',
      in_bucket: 'in the bucket',
      under_replicated: 'under-replicated',
      without_copy: 'without any copy',
      unavailable: 'unavailable (no live copy)',
      copies_not_counted: 'copies not counted',
    };
    fillTable(
      $('cluster-segments'),
      [{ label: 'Segments' }, { label: 'Count', num: true }],
      Object.entries(segments).map(([key, value]) => [labels[key] || key, key === 'bytes' ? bytes(value) : number(value)]),
    );
  }

  // ---- wiring --------------------------------------------------------------------------

  function onKey(event) {
    const target = event.target;
    const typing = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement;
    if ($('search-view').hidden) return;
    if (event.key === 'Escape' && state.run) {
      event.preventDefault();
      cancelSearch();
    } else if (event.key === '/' && !typing && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      $('query').focus();
    }
  }

  // Up and down move between event rows.
  function onEventsKey(event) {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
    const toggles = [...$('events').querySelectorAll('.event-toggle')];
    const index = toggles.indexOf(document.activeElement);
    if (index < 0) return;
    event.preventDefault();
    const next = toggles[index + (event.key === 'ArrowDown' ? 1 : -1)];
    if (next) next.focus();
  }

  function init() {
    $('signin-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', () => signOut(''));
    $('search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      runSearch();
    });
    $('query').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        runSearch();
      }
    });
    $('query').addEventListener('input', clearQueryError);
    $('cancel').addEventListener('click', cancelSearch);
    $('range').addEventListener('change', () => {
      const custom = $('range').value === 'custom';
      $('custom-range').hidden = !custom;
      if (custom) {
        if ($('live').checked) $('live').checked = false;
        if (!$('range-start').value) {
          const now = Date.now();
          setRangeInput($('range-start'), now - 3600 * 1000);
          setRangeInput($('range-end'), now);
        }
        $('range-start').focus();
      } else {
        runSearch();
      }
    });
    $('live').addEventListener('change', () => {
      if ($('live').checked && $('range').value === 'custom') {
        // A live search's window ends now and starts relative to it.
        $('range').value = '1h';
        $('custom-range').hidden = true;
      }
      if (!$('live').checked && state.run && state.run.request.live) cancelSearch();
      else runSearch();
    });
    $('events').addEventListener('keydown', onEventsKey);
    document.addEventListener('keydown', onKey);
    window.addEventListener('hashchange', route);
    window.addEventListener('pagehide', stopSearch);

    if (token()) {
      loadRepositories()
        .then(route)
        .catch((error) => {
          if (!signedOutBy(error)) {
            setStatus('Could not list the repositories: ' + error.message);
            route();
          }
        });
    } else {
      route();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();

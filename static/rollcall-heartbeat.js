/*
 * rollcall-heartbeat.js — the meeting page's "still here" for rollcall.
 *
 * Add to a page that already joins a LiveKit room (livekit-client):
 *
 *   <script src="https://rollcall.example.com/rollcall-heartbeat.js"></script>
 *   const beat = RollcallHeartbeat.start({
 *     url: 'https://rollcall.example.com',   // rollcall's base URL
 *     room,                                    // the livekit-client Room
 *     token: livekitToken,                     // the token the page joined with (or a function returning it)
 *   });
 *   // beat.stop() when the page no longer wants it; beat.setToken(t) after a refresh.
 *
 * While the room is connected it POSTs /api/heartbeat every `interval` ms
 * (and once at once on connect and on reconnect); it pauses while the room
 * is disconnected or reconnecting, stops for good on 401/403/404 (the
 * token or the room will never be accepted), and backs off exponentially on
 * network errors, 408, 429 and 5xx, never sooner than a Retry-After. It
 * never throws into the page and never waits on anything the page does.
 *
 * Heartbeats only ever end attendance (rollcall closes a cycle whose
 * heartbeats stopped for ROLLCALL_HEARTBEAT_TIMEOUT, 5 min by default);
 * they never create it. The default 30 s leaves room for browsers that run
 * a background tab's timers only once a minute.
 *
 * Only `room.on`, `room.off`, `room.state` and event names as strings are
 * used, so any livekit-client version (1.x, 2.x) or a look-alike works.
 * Plain ES2017, no dependencies: a classic <script> (global
 * RollcallHeartbeat) or CommonJS; an ES module may `import` this file for
 * its effect and use globalThis.RollcallHeartbeat.
 */
(function (root) {
  'use strict';

  var DEFAULTS = {
    interval: 30000, // between heartbeats while all is well
    backoffBase: 5000, // the first retry after a failure
    maxBackoff: 60000, // retries never wait longer (unless Retry-After says so)
    requestTimeout: 10000, // a request that hangs this long counts as failed
  };

  // The livekit-client event names (RoomEvent values) this listens to.
  // 'connectionStateChanged' alone would do; the others cover look-alikes
  // that emit only the coarse events.
  var EVENTS = ['connectionStateChanged', 'connected', 'reconnecting', 'reconnected', 'disconnected'];

  function warn() {
    try {
      if (root.console && root.console.warn) {
        root.console.warn.apply(root.console, ['[rollcall heartbeat]'].concat([].slice.call(arguments)));
      }
    } catch (_) {
      /* a broken console must not break the page */
    }
  }

  /** Retry-After (seconds or an HTTP date) in ms, or 0. */
  function retryAfterMs(response) {
    var value = response.headers.get('Retry-After');
    if (!value) return 0;
    var seconds = Number(value);
    if (isFinite(seconds)) return Math.max(0, seconds * 1000);
    var date = Date.parse(value);
    return isFinite(date) ? Math.max(0, date - Date.now()) : 0;
  }

  function number(value, fallback) {
    return typeof value === 'number' && value > 0 && isFinite(value) ? value : fallback;
  }

  function start(options) {
    var opts = options || {};
    var room = opts.room;
    var base = typeof opts.url === 'string' ? opts.url.replace(/\/+$/, '') : '';
    var inert = { stop: function () {}, setToken: function () {}, get state() { return 'stopped'; } };
    if (!room || typeof room.on !== 'function' || !base) {
      warn('not started: options.room (a LiveKit Room) and options.url (rollcall) are required');
      return inert;
    }
    var endpoint = base + '/api/heartbeat';
    var interval = number(opts.interval, DEFAULTS.interval);
    var backoffBase = number(opts.backoffBase, DEFAULTS.backoffBase);
    var maxBackoff = number(opts.maxBackoff, DEFAULTS.maxBackoff);
    var requestTimeout = number(opts.requestTimeout, DEFAULTS.requestTimeout);
    var token = opts.token;

    var stopped = false;
    var running = false; // the room is connected and beats are scheduled
    var timer = null;
    var failures = 0;
    var epoch = 0; // bumped on every pause: answers of an older run are ignored
    // keepalive lets a beat outlive the page, but some older browsers refuse
    // it on a request that needs a CORS preflight: if it has never worked
    // here, a network error drops it for the next attempts.
    var keepalive = true;
    var keepaliveWorked = false;
    // For look-alikes without `state`: the last event says whether we are connected.
    var lastEventConnected = false;

    function connected() {
      return typeof room.state === 'string' ? room.state === 'connected' : lastEventConnected;
    }

    function schedule(delay) {
      clearTimeout(timer);
      timer = setTimeout(beat, delay);
    }

    function backoff(minimum) {
      failures += 1;
      var delay = Math.min(maxBackoff, backoffBase * Math.pow(2, failures - 1));
      // Jitter spreads a whole school's pages apart after an outage.
      delay = delay / 2 + Math.random() * (delay / 2);
      schedule(Math.max(delay, minimum || 0));
    }

    function giveUp(response, body) {
      stop();
      var code = body && body.error ? ' (' + body.error + ')' : '';
      warn('stopped: rollcall answered ' + response.status + code + '; no more heartbeats from this page');
    }

    function currentToken() {
      return typeof token === 'function' ? token() : token;
    }

    function send(bearer, run) {
      var controller = typeof AbortController === 'function' ? new AbortController() : null;
      var abortTimer = controller ? setTimeout(function () { controller.abort(); }, requestTimeout) : null;
      return fetch(endpoint, {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + bearer },
        mode: 'cors',
        credentials: 'omit', // the token is the credential; no cookies for rollcall
        cache: 'no-store',
        keepalive: keepalive, // still delivered if the page is closing
        signal: controller ? controller.signal : undefined,
      }).then(
        function (response) {
          clearTimeout(abortTimer);
          if (keepalive) keepaliveWorked = true;
          if (stopped || run !== epoch) return;
          var status = response.status;
          if (status >= 200 && status < 300) {
            failures = 0;
            schedule(interval);
          } else if (status === 408 || status === 429 || status >= 500) {
            backoff(retryAfterMs(response));
          } else {
            // 401 expired or forged token, 403 a token for no room, 404 a
            // room rollcall does not track, 400/405/413: none will ever pass
            // again — unless the page has refreshed the token meanwhile.
            return Promise.resolve()
              .then(currentToken)
              .then(function (latest) {
                if (stopped || run !== epoch) return;
                if (status === 401 && typeof latest === 'string' && latest !== '' && latest !== bearer) {
                  schedule(0);
                  return;
                }
                return response.json().then(
                  function (body) { giveUp(response, body); },
                  function () { giveUp(response, null); }
                );
              });
          }
        },
        function () {
          clearTimeout(abortTimer);
          if (!keepaliveWorked) keepalive = false;
          if (!stopped && run === epoch) backoff(0);
        }
      );
    }

    function beat() {
      timer = null;
      if (stopped || !running) return;
      var run = epoch;
      Promise.resolve()
        .then(currentToken)
        .then(function (bearer) {
          if (stopped || run !== epoch) return;
          if (typeof bearer !== 'string' || bearer === '') {
            backoff(0); // no token yet: try again later
            return;
          }
          return send(bearer, run);
        })
        .catch(function (err) {
          // A token function that throws, or anything unforeseen: keep trying.
          warn('heartbeat failed:', err && err.message ? err.message : err);
          if (!stopped && run === epoch) backoff(0);
        });
    }

    function onRoomEvent() {
      try {
        if (stopped) return;
        if (connected() && !running) {
          running = true;
          failures = 0;
          schedule(0); // at once: rollcall should hear from us as soon as we are in
        } else if (!connected() && running) {
          running = false;
          epoch += 1;
          clearTimeout(timer);
          timer = null;
        }
      } catch (err) {
        warn('room event handling failed:', err && err.message ? err.message : err);
      }
    }

    var handlers = EVENTS.map(function (name) {
      var handler = function () {
        if (name === 'connected' || name === 'reconnected') lastEventConnected = true;
        if (name === 'disconnected' || name === 'reconnecting') lastEventConnected = false;
        onRoomEvent();
      };
      return [name, handler];
    });

    function stop() {
      if (stopped) return;
      stopped = true;
      running = false;
      epoch += 1;
      clearTimeout(timer);
      timer = null;
      handlers.forEach(function (pair) {
        try {
          if (typeof room.off === 'function') room.off(pair[0], pair[1]);
        } catch (_) {
          /* nothing to do */
        }
      });
    }

    try {
      handlers.forEach(function (pair) { room.on(pair[0], pair[1]); });
    } catch (err) {
      warn('not started: could not listen to the room:', err && err.message ? err.message : err);
      stop();
      return inert;
    }
    onRoomEvent(); // the room may already be connected

    return {
      stop: stop,
      /** A new token (string) or a function returning one, used from the next heartbeat. */
      setToken: function (next) {
        token = next;
      },
      /** 'stopped', 'running' (connected, heartbeating) or 'paused' (waiting for the room). */
      get state() {
        return stopped ? 'stopped' : running ? 'running' : 'paused';
      },
    };
  }

  var api = { start: start, defaults: DEFAULTS };
  if (typeof module === 'object' && module && module.exports) module.exports = api;
  else root.RollcallHeartbeat = api;
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this);

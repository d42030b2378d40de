// Comptoir inbox: live updates over server-sent events and keyboard
// shortcuts. Every page works without this script.
(function () {
  'use strict';

  // Swap the page's live parts ([data-live] with an id) for fresh ones.
  // A part with data-state (the reply box) is kept while its state is the
  // same, so text being typed is never lost.
  function swap(html) {
    var doc = new DOMParser().parseFromString(html, 'text/html');
    document.querySelectorAll('[data-live]').forEach(function (el) {
      var fresh = doc.getElementById(el.id);
      // Unchanged parts stay, and so does the keyboard focus in them.
      if (!fresh || el.isEqualNode(fresh)) return;
      if (el.dataset.state !== undefined && el.dataset.state === fresh.dataset.state) return;
      el.replaceWith(document.importNode(fresh, true));
    });
  }

  var busy = false;
  var again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html) swap(html); })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  if (window.EventSource && document.body.dataset.live === 'on') {
    var events = new EventSource('/inbox/events');
    events.addEventListener('change', refresh);
  }

  document.addEventListener('keydown', function (e) {
    var t = e.target;
    var typing = t.matches && t.matches('input, textarea, select');
    // Enter sends the reply; Shift+Enter starts a new line.
    if (t.matches && t.matches('textarea[data-send-on-enter]') &&
        e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (t.value.trim() !== '') t.form.requestSubmit();
      return;
    }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    // "/" searches; "r" goes to the reply box.
    var target = { '/': 'search', 'r': 'reply' }[e.key];
    if (target && document.getElementById(target)) {
      e.preventDefault();
      document.getElementById(target).focus();
    }
  });
})();

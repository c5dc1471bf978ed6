// The portal's only script (served by Ripple; the CSP allows no inline script). It shows times in
// the browser's own time zone and keeps "What happens next" up to date until every app is final.
(() => {
  const localize = (root) => {
    for (const el of root.querySelectorAll('time[data-local-time]')) {
      const at = new Date(el.getAttribute('datetime'));
      if (Number.isNaN(at.getTime())) continue;
      const sameDay = at.toDateString() === new Date().toDateString();
      el.textContent = sameDay
        ? at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
        : at.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
      el.title = at.toString();
    }
  };

  const follow = (box) => {
    const url = box.getAttribute('data-timeline-url');
    let failures = 0;
    const poll = async () => {
      try {
        const res = await fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } });
        if (res.status === 401) {
          box.setAttribute('data-final', 'signed-out');
          return;
        }
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const body = await res.json();
        // Server-rendered and escaped by the portal: the same markup as the first page load.
        box.innerHTML = body.html;
        localize(box);
        failures = 0;
        if (body.final) {
          box.setAttribute('data-final', 'true');
          return;
        }
      } catch {
        failures += 1;
      }
      setTimeout(poll, Math.min(1000 * 2 ** Math.max(0, failures - 2), 15000));
    };
    if (box.getAttribute('data-final') !== 'true') setTimeout(poll, 1000);
  };

  const start = () => {
    localize(document);
    for (const box of document.querySelectorAll('[data-timeline-url]')) follow(box);
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();

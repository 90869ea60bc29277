// The client's test hook (`window.tsunagi`, web/js/test/): read-only access to a page's
// state for the tests. The pages never load it; every browser context a test opens gets
// it from here (launchBrowser in browser.mjs calls addTestHook on each new context).
//
// An init script (run by the browser before any script of a new document, and not
// subject to the page's Content-Security-Policy) adds, once the document is parsed, a
// <script type="module"> with the hook's URL: a same-origin file, so `script-src 'self'`
// allows it. The page's own modules have run by then (module scripts run before
// DOMContentLoaded), and the hook's script delays the page's `load` event, which
// `page.goto` waits for: `window.tsunagi` is there when goto returns.

/** The hook of each page, by the page's own module script. */
const HOOKS = { '/js/app.js': '/js/test/hook.js', '/js/watch.js': '/js/test/watch-hook.js' };

/** Runs in the page (serialized by playwright: it must not use anything from this file). */
function loadHook(hooks) {
  document.addEventListener(
    'DOMContentLoaded',
    () => {
      for (const s of document.querySelectorAll('script[type="module"][src]')) {
        const hook = hooks[new URL(s.src, location.href).pathname];
        if (!hook) continue;
        const el = document.createElement('script');
        el.type = 'module';
        el.src = hook;
        document.head.append(el);
      }
    },
    { once: true },
  );
}

/** Loads the test hook into every page of a playwright BrowserContext. */
export async function addTestHook(context) {
  await context.addInitScript(loadHook, HOOKS);
}

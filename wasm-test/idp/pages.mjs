// HTML pages of the test IdP. Element ids and names follow Keycloak's login theme, so browser
// tests written against this IdP also work against a real Keycloak:
//   login form  #kc-form-login, inputs #username / #password, submit #kc-login,
//   login error #input-error, logout confirmation #kc-logout, error page #kc-error-message.
// Pages are plain HTML without external resources.

export function escapeHtml(value) {
  return String(value ?? '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

const STYLE = `
body{font-family:system-ui,sans-serif;background:#f0f0f0;margin:0}
#kc-header{background:#393f44;color:#fff;padding:16px 24px;font-size:20px}
.card{background:#fff;max-width:420px;margin:40px auto;padding:24px 32px;box-shadow:0 1px 3px rgba(0,0,0,.2)}
label{display:block;margin:12px 0 4px}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:8px;font-size:16px}
input[type=submit],button{margin-top:20px;width:100%;padding:10px;font-size:16px;background:#0066cc;color:#fff;border:0;cursor:pointer}
.kc-feedback-text,#input-error,#kc-error-message{color:#c9190b}
`;

function layout(title, body, { realm = 'demo' } = {}) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<div id="kc-header">${escapeHtml(realm.toUpperCase())}</div>
<div class="card">
${body}
</div>
</body>
</html>
`;
}

/**
 * The username/password form of the authorization-code flow.
 * @param {object} o
 * @param {string} o.action URL the form POSTs to
 * @param {string} [o.username] prefill (login_hint, or the name typed before an error)
 * @param {string} [o.error] message shown above the form
 * @param {string} [o.clientId] shown as "Sign in to <realm>" context
 */
export function loginPage({ action, username = '', error, realm = 'demo', clientId }) {
  const feedback = error
    ? `<div class="alert-error"><span id="input-error" class="kc-feedback-text" aria-live="polite">${escapeHtml(error)}</span></div>`
    : '';
  return layout(`Sign in to ${realm}`, `
<h1 id="kc-page-title">Sign in to your account</h1>
${clientId ? `<p class="kc-client">Application: <span id="kc-client-id">${escapeHtml(clientId)}</span></p>` : ''}
${feedback}
<form id="kc-form-login" action="${escapeHtml(action)}" method="post" novalidate>
  <label for="username">Username or email</label>
  <input tabindex="1" id="username" name="username" type="text" value="${escapeHtml(username)}" autofocus autocomplete="username" aria-invalid="${error ? 'true' : 'false'}">
  <label for="password">Password</label>
  <input tabindex="2" id="password" name="password" type="password" autocomplete="current-password" aria-invalid="${error ? 'true' : 'false'}">
  <input type="hidden" id="id-hidden-input" name="credentialId" value="">
  <input tabindex="4" name="login" id="kc-login" type="submit" value="Sign In">
</form>
`, { realm });
}

/** Error page (Keycloak: "We are sorry..."). `details` is a map of OAuth error fields. */
export function errorPage({ message, details = {}, realm = 'demo' }) {
  const rows = Object.entries(details)
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd class="kc-error-${escapeHtml(k)}">${escapeHtml(v)}</dd>`)
    .join('\n');
  return layout('We are sorry...', `
<h1 id="kc-page-title">We are sorry...</h1>
<p id="kc-error-message" class="instruction">${escapeHtml(message)}</p>
${rows ? `<dl>${rows}</dl>` : ''}
`, { realm });
}

/**
 * RP-initiated logout. `formHtml` is oidc-provider's form (id "op.logoutForm", carrying the xsrf
 * token). With `autoSubmit` (a valid id_token_hint was given: Keycloak then logs out without
 * asking) the page submits itself with logout=yes; a client without JavaScript submits the form
 * (the `logout=yes` field is part of it). Otherwise the user confirms with #kc-logout.
 */
export function logoutPage({ formHtml, autoSubmit, realm = 'demo' }) {
  const form = formHtml.replace(
    '</form>',
    `${autoSubmit ? '<input type="hidden" name="logout" value="yes"/>' : ''}</form>`,
  );
  if (autoSubmit) {
    return layout('Logging out', `
<h1 id="kc-page-title">Logging out</h1>
${form}
<noscript><button type="submit" form="op.logoutForm" id="kc-logout">Logout</button></noscript>
<script>document.forms[0].submit()</script>
`, { realm });
  }
  return layout('Logging out', `
<h1 id="kc-page-title">Logging out</h1>
<p class="instruction">Do you want to log out?</p>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes" id="kc-logout">Logout</button>
`, { realm });
}

export function loggedOutPage({ realm = 'demo' } = {}) {
  return layout('You are logged out', `
<h1 id="kc-page-title">You are logged out</h1>
`, { realm });
}

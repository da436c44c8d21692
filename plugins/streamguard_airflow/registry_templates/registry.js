/* Registry page: filters submit on change; promote / rollback POST with the CSRF token. */
(function () {
  "use strict";
  const meta = (name) => document.querySelector('meta[name="' + name + '"]');
  const csrf = meta("streamguard-csrf");
  const login = meta("streamguard-login");

  function show(box, text, ok) {
    if (!box) { window.alert(text); return; }
    box.textContent = text;
    box.className = "message " + (ok ? "ok" : "error");
  }

  function detail(doc, response) {
    if (typeof doc.detail === "string") return doc.detail;
    if (Array.isArray(doc.detail)) return doc.detail.map((d) => d.msg).join("; ");
    return "the server answered " + response.status;
  }

  async function act(button) {
    const section = button.closest("[data-model]");
    const box = section && section.querySelector(".message");
    if (!window.confirm(button.dataset.confirm)) return;
    const body = JSON.parse(button.dataset.body);
    const reason = section && section.querySelector("input[name=reason]");
    body.reason = reason ? reason.value : "";
    const headers = {"Content-Type": "application/json", "Accept": "application/json"};
    if (csrf) headers[csrf.dataset.header] = csrf.content;
    button.disabled = true;
    let response;
    try {
      response = await fetch(button.dataset.url, {method: "POST", credentials: "same-origin", headers: headers,
                                                  body: JSON.stringify(body)});
    } catch (error) {
      show(box, "the request failed: " + error, false);
      button.disabled = false;
      return;
    }
    if (response.status === 401 && login) { window.location.href = login.content; return; }
    const doc = await response.json().catch(() => ({}));
    if (response.ok) {
      show(box, "v" + doc.champion + " is the champion now; reloading", true);
      window.location.reload();
    } else {
      show(box, detail(doc, response), false);
      button.disabled = false;
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) { event.preventDefault(); act(button); }
  });
  document.querySelectorAll("form.filters select").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  document.querySelectorAll("form.compare").forEach((form) => {
    const submit = form.querySelector("button[type=submit]");
    const update = () => { submit.disabled = form.querySelectorAll("input[name=v]:checked").length < 2; };
    form.addEventListener("change", update);
    update();
  });
})();

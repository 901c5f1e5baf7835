// Sign-up forms answer in place: post with fetch, show the server's message beside
// the form. Without this script the same forms post and the server answers with a page.
"use strict";

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.classList.contains("signup-form")) return;
  event.preventDefault();

  const card = form.closest(".signup-card");
  const input = form.querySelector("input[name=email]");
  const error = form.querySelector(".signup-error");
  const button = form.querySelector("button[type=submit]");
  const label = button.textContent;

  const showError = (text) => {
    error.textContent = text;
    error.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
  };

  button.disabled = true;
  button.textContent = form.dataset.sending;
  try {
    if (form.dataset.altcha) {
      form.querySelector("input[name=altcha]").value = await solveRobotCheck(form.dataset.altcha);
    }
    const response = await fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    const answer = await response.json();
    if (answer.ok) {
      const success = card.querySelector(".signup-success");
      success.querySelector("h3").textContent = answer.title;
      success.querySelector("p").textContent = answer.text;
      success.hidden = false;
      form.remove();
      return;
    }
    showError((answer.errors && answer.errors.email) || answer.error || form.dataset.networkError);
  } catch {
    showError(form.dataset.networkError);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
});

// Typing again clears the message of the previous attempt.
document.addEventListener("input", (event) => {
  const form = event.target.closest && event.target.closest(".signup-form");
  if (!form || event.target.name !== "email") return;
  form.querySelector(".signup-error").hidden = true;
  event.target.setAttribute("aria-invalid", "false");
});

// The robot check (ALTCHA v1), when the site switches it on: find the number whose
// SHA-256 with the salt is the challenge; the server verifies it once.
async function solveRobotCheck(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  const c = await response.json();
  const encoder = new TextEncoder();
  for (let n = 0; n <= c.maxnumber; n++) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(c.salt + n)));
    const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
    if (hex === c.challenge) {
      const solution = { algorithm: c.algorithm, challenge: c.challenge, number: n, salt: c.salt, signature: c.signature };
      return btoa(JSON.stringify(solution));
    }
  }
  throw new Error("robot check not solved");
}

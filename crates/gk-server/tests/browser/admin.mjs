// Drives the admin pages in headless Chromium (Debian's, through playwright-core): sign in, see
// every plugin's state in the list, disable a plugin and see its route answer 403, enable it
// again, change its policy and see the change take effect, filter the logs; then, still signed
// in, open the `intruder` test plugin's page and dashboard widget, whose script tries to read
// /admin, the cookie and to approve its plugin; last, look at the dashboard in German and in
// English as a person would. Run by crates/gk-server/tests/admin_ui.rs, which starts the server
// with plugins in every state, registers `intruder` and passes GK_URL, GK_ADMIN_TOKEN,
// GK_AGENT_TOKEN and GK_SCREENSHOTS (where the screenshots go); it checks afterwards that the
// intruder's policy did not change.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { dashboard as lookAtDashboard } from "./dashboard.mjs";

const base = process.env.GK_URL;
const admin = process.env.GK_ADMIN_TOKEN;
const agent = process.env.GK_AGENT_TOKEN;
const shots = process.env.GK_SCREENSHOTS ?? ".";
const route = `${base}/api/plugins/stats/overview`;

/** The status of the Stats route, called as an agent would call it. */
async function routeStatus() {
  const response = await fetch(route, { headers: { authorization: `Bearer ${agent}` } });
  return response.status;
}

function step(message) {
  console.log(`ok: ${message}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();

  // Not signed in: the admin page sends to the sign-in page; a wrong token is refused there.
  await page.goto(`${base}/admin/plugins`);
  assert.match(page.url(), /\/admin\/login$/);
  await page.fill("#token", agent);
  await page.click("#sign-in");
  assert.match(await page.textContent("[role=alert]"), /not an admin/);
  step("an agent token cannot sign in");

  await page.fill("#token", admin);
  await page.click("#sign-in");
  assert.match(page.url(), /\/admin\/plugins$/);
  const row = page.locator('tr[data-plugin="stats"]');
  assert.equal((await row.locator("td").nth(1).textContent()).trim(), "wasm");
  assert.equal((await page.locator('tr[data-plugin="hello-grpc"] td').nth(1).textContent()).trim(), "grpc");
  step("signed in; the list shows both runtimes");

  // Every plugin the server knows of, in whatever state, with why when it failed.
  const cell = (name, what) => page.locator(`tr[data-plugin="${name}"] [data-state=${what}]`);
  const state = async (name, what) => (await cell(name, what).textContent()).trim();
  const problem = async (name) =>
    (await page.locator(`tr[data-plugin="${name}"] [data-problem]`).textContent()).trim();
  assert.equal(await state("stats", "lifecycle"), "loaded");
  assert.equal(await state("stats", "review"), "approved");
  assert.equal(await state("later", "lifecycle"), "not loaded yet");
  assert.equal(await state("dormant", "enabled"), "disabled");
  assert.equal(await state("dormant", "lifecycle"), "not loaded yet");
  assert.equal(await state("broken", "lifecycle"), "failed to load");
  assert.match(await problem("broken"), /broken/);
  assert.equal(await state("half-written", "lifecycle"), "refused");
  assert.match(await problem("half-written"), /half-written/);
  assert.equal(await state("intruder", "review"), "pending review");
  assert.equal(await state("stats", "signature"), "verified");
  assert.equal(await state("hello-grpc", "signature"), "unsigned");
  assert.equal(await state("intruder", "signature"), "no file");
  assert.equal((await row.locator("td").nth(2).textContent()).trim(), "2.0.0");
  assert.match((await row.locator("td.num").first().textContent()).trim(), /^\d+$/);
  await page.screenshot({ path: `${shots}/admin-plugins.png`, fullPage: true });
  step("the list shows every plugin state: loaded, not loaded, disabled, failed, refused, pending review");

  assert.equal(await routeStatus(), 200);
  await row.locator("button.toggle").click();
  assert.match(await page.textContent("[role=status]"), /stats: disabled/);
  assert.equal(await state("stats", "enabled"), "disabled");
  assert.equal(await routeStatus(), 403);
  step("disabled: the route answers 403");

  await row.locator("button.toggle").click();
  assert.equal(await state("stats", "enabled"), "enabled");
  assert.equal(await routeStatus(), 200);
  step("enabled again: the route answers 200");

  // The detail page: declarations, and the policy editor.
  await row.locator("a").click();
  assert.equal(await page.locator("#routes tbody tr").count(), 8);
  assert.equal(await page.locator("#widgets tbody tr").count(), 3);
  assert.equal((await page.textContent("#policy-status")).trim(), "approved");
  const policy = JSON.parse(await page.inputValue("#policy"));
  policy.permissions = policy.permissions.map((p) =>
    p.type === "db" ? { ...p, scope: ["queue"] } : p,
  );
  await page.fill("#policy", JSON.stringify(policy, null, 2));
  await page.click("#save-policy");
  assert.match(await page.textContent("[role=status]"), /policy saved/);
  assert.notEqual(await routeStatus(), 200);
  step("a policy without the ticket table: the route is refused");

  await page.click("#approve");
  assert.match(await page.textContent("[role=status]"), /approved/);
  assert.equal(await routeStatus(), 200);
  step("approved with what it requests: the route answers again");

  await page.click("#block");
  assert.equal((await page.textContent("#policy-status")).trim(), "blocked");
  assert.notEqual(await routeStatus(), 200);
  await page.click("#approve");
  assert.equal(await routeStatus(), 200);
  step("blocked, then approved");

  // A malformed policy is refused with the reason, and the stored one is kept.
  await page.fill("#policy", "{ not json");
  await page.click("#save-policy");
  assert.match(await page.textContent("[role=alert]"), /not a policy/);
  assert.equal(await routeStatus(), 200);
  step("a malformed policy is refused");

  // The upload form: a file that is not a plugin is refused with the reason.
  await page.goto(`${base}/admin/plugins`);
  await page.setInputFiles('#upload input[name="plugin"]', {
    name: "notes.txt",
    mimeType: "text/plain",
    buffer: Buffer.from("not a plugin"),
  });
  await page.click("#upload button");
  assert.match(await page.textContent("[role=alert]"), /`notes.txt` is not a plugin file name/);
  step("an upload that is not a plugin is refused with the reason");

  // Logs, filtered by level.
  await page.goto(`${base}/admin/plugins/logs?plugin=hello-grpc`);
  assert.ok((await page.locator("#logs tbody tr.level-info").count()) >= 1);
  await page.selectOption("#level", "error");
  await page.click("#log-filter button");
  assert.match(page.url(), /level=error/);
  assert.equal(await page.locator("#logs tbody tr.level-info").count(), 0);
  step("logs filtered by level");

  // Control: a script on the server's own origin, in this signed-in browser, could read the
  // admin page and its CSRF value. What follows shows a plugin's script cannot.
  await page.goto(`${base}/healthz`);
  const control = await page.evaluate(async () => (await (await fetch("/admin/plugins")).text()).includes('name="csrf"'));
  assert.equal(control, true, "the control script reads the admin page");

  /** Checks what the intruder's script (see tests/common/intruder.rs) reported. */
  function refused(report, where) {
    const result = JSON.parse(report);
    assert.match(result.read, /^blocked: TypeError/, `${where}: ${report}`);
    assert.match(result.cookie, /^blocked: SecurityError/, `${where}: ${report}`);
    assert.equal(result.approve, undefined, `${where}: ${report}`);
  }
  await page.goto(`${base}/intruder/page`);
  await page.waitForSelector("body[data-result]");
  refused(await page.getAttribute("body", "data-result"), "plugin page");
  step("a plugin page's script cannot read /admin or the cookie, nor approve");

  const dashboard = await fetch(`${base}/dashboard`, { headers: { authorization: `Bearer ${agent}` } });
  assert.equal(dashboard.status, 200);
  await page.goto(`${base}/healthz`);
  await page.setContent(await dashboard.text());
  const widget = page.frameLocator('iframe[data-widget="intruder_widget"]');
  await widget.locator("body[data-result]").waitFor({ state: "attached" });
  refused(await widget.locator("body").getAttribute("data-result"), "dashboard widget");
  step("a dashboard widget's script, framed on the server's origin, cannot either");

  await lookAtDashboard(browser, { base, agent, shots, step });
} finally {
  await browser.close();
}

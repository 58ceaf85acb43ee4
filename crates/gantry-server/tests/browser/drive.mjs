// Drives Debian's headless Chromium through the dashboard of a running
// `gantry serve` (started by tests/browser.rs, which passes its URL and
// facts in the environment). Each user gets a fresh profile directory.
// Every step asserts what a person would see; any failure exits non-zero.
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL_BASE = env("GANTRY_URL");
const ADMIN_TOKEN = env("GANTRY_ADMIN_TOKEN_FOR_TEST");
const SHOTS = env("SCREENSHOT_DIR");
const CHROMIUM = env("CHROMIUM");
const PROJECT_A = env("PROJECT_A");
const PROJECT_A_NAME = env("PROJECT_A_NAME");
const PROJECT_B_NAME = env("PROJECT_B_NAME");
// A local container target with two good revisions (tests/browser.rs);
// unset when no container engine is available.
const ROLLBACK_TARGET = process.env.ROLLBACK_TARGET || "";
mkdirSync(SHOTS, { recursive: true });

const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

async function asUser(username, password, fn, viewport = { width: 1280, height: 900 }) {
  const profile = mkdtempSync(join(tmpdir(), "gantry-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS, viewport,
  });
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    page.setDefaultTimeout(30000);
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("dialog", (d) => { errors.push(`dialog: ${d.message()}`); d.dismiss(); });
    await page.goto(`${URL_BASE}/dash`);
    check(page.url().includes("/login"), `${username}: no session redirects to the login page`);
    await page.fill("input[name=username]", username);
    await page.fill("input[name=password]", password);
    await Promise.all([page.waitForURL(/\/dash/), page.click("button[type=submit]")]);
    check((await page.textContent("[data-testid=whoami]")).includes(username), `${username} is signed in`);
    await fn(page);
    check(errors.length === 0, `${username}: no script ran from user content and no page errors (${errors.join("; ")})`);
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

let deployJobUrl = "";

// 1. The administrator (bootstrap token as password) creates users.
await asUser("root", ADMIN_TOKEN, async (page) => {
  await page.goto(`${URL_BASE}/login`);
  await shot(page, "01-login");
  await page.goto(`${URL_BASE}/dash/users`);
  for (const [name, role] of [["dev", "developer"], ["boss", "maintainer"]]) {
    await page.fill("[data-testid=new-user] input[name=username]", name);
    await page.selectOption("[data-testid=new-user] select[name=role]", role);
    await page.fill("[data-testid=new-user] input[name=password]", "correct horse battery");
    await page.click("[data-testid=new-user] button[type=submit]");
    await page.waitForSelector("[data-testid=new-token]");
  }
  await shot(page, "02-users");

  // 2. The overview shows both projects' pipelines.
  await page.goto(`${URL_BASE}/dash`);
  const latest = await page.textContent("[data-testid=latest]");
  check(latest.includes(PROJECT_A_NAME) && latest.includes(PROJECT_B_NAME), "overview lists both projects");
  const pwned = await page.evaluate(() => window.pwned === undefined);
  check(pwned, "a job named <script> did not run as a script");
  check((await page.textContent("[data-testid=recent]")).includes("<script>window.pwned=1</script>"), "the <script> job name is shown as text");
  await shot(page, "03-overview");
  const projectB = await page.$eval("select[name=project]",
    (s, name) => [...s.options].find((o) => o.textContent.includes(name)).value, PROJECT_B_NAME);
  await page.selectOption("select[name=project]", projectB);
  await page.click("form.filters button[type=submit]");
  const filtered = await page.textContent("[data-testid=latest]");
  check(filtered.includes(PROJECT_B_NAME) && !filtered.includes(PROJECT_A_NAME), "project filter");
  await page.goto(`${URL_BASE}/dash/runners`);
  await shot(page, "04-runners");
  await page.goto(`${URL_BASE}/dash/schedules`);
  await shot(page, "05-schedules");
});

// 3. A developer runs a pipeline with a choice-list variable and watches
//    the log arrive; the production deploy needs an approver.
await asUser("dev", "correct horse battery", async (page) => {
  await page.goto(`${URL_BASE}/dash/projects/${PROJECT_A}/run`);
  const options = await page.$$eval("select[name='var:TARGET'] option", (os) => os.map((o) => o.value));
  check(JSON.stringify(options) === JSON.stringify(["staging", "production"]), "TARGET is a choice list");
  await page.selectOption("select[name='var:TARGET']", "production");
  await page.fill("input[name='input:greeting']", "bonjour");
  await shot(page, "06-run-form");
  await Promise.all([page.waitForURL(/\/dash\/pipelines\/\d+$/), page.click("[data-testid=run]")]);
  await page.waitForSelector("[data-testid=job-node]");
  check((await page.$$("svg.edges path")).length >= 1, "needs are drawn as SVG edges");
  await shot(page, "07-pipeline");
  const pipelineUrl = page.url();

  // The slow job's log streams in while it runs.
  await page.click("[data-testid=job-node]:has-text('build')");
  await page.waitForURL(/\/dash\/jobs\/\d+$/);
  await page.waitForFunction(() => document.getElementById("log").textContent.includes("first half, bonjour"));
  const whileRunning = await page.textContent("[data-testid=job-status]");
  await page.waitForFunction(() => document.getElementById("log").textContent.includes("target is production"), null, { timeout: 60000 });
  check(!whileRunning.includes("success"), `the log arrived while the job was ${whileRunning.trim()}`);
  await page.waitForFunction(() => document.getElementById("log").dataset.done === "true", null, { timeout: 60000 });
  check(await page.$eval("#log .fg-32", (e) => e.textContent.includes("green")), "ANSI colours");
  check((await page.$$("#log details")).length >= 1, "collapsible section");
  check(!(await page.content()).includes("<img src=x"), "markup in the log stays text");
  await page.fill("#log-search", "target is production");
  const hits = await page.textContent("#log-hits");
  check(hits === "1 match", `log search finds the one line (${hits})`);
  await page.goto(page.url() + "#L2");
  await page.reload();
  await page.waitForSelector("#L2.target");
  check(true, "a link to a line highlights it");
  await shot(page, "08-job-log");

  // Re-running starts from the variables and inputs it ran with.
  await page.goto(pipelineUrl);
  await Promise.all([page.waitForURL(/\/run\?from=\d+$/), page.click("[data-testid=rerun]")]);
  check(await page.inputValue("input[name='input:greeting']") === "bonjour", "the re-run form keeps the input it ran with");
  check(await page.inputValue("select[name='var:TARGET']") === "production", "the re-run form keeps the variable it ran with");

  // The developer cannot approve the production deploy.
  await page.goto(pipelineUrl);
  await page.click("[data-testid=job-node]:has-text('deploy')");
  await page.waitForURL(/\/dash\/jobs\/\d+$/);
  deployJobUrl = page.url();
  check(await page.isVisible("[data-testid=needs-approver]"), "developer sees that an approver is needed");
  check(!(await page.isVisible("[data-testid=play]")), "developer has no approve button");
  const csrf = await page.getAttribute("input[name=csrf]", "value");
  const status = await page.evaluate(async ([url, csrf]) => {
    const r = await fetch(url + "/play", { method: "POST", body: new URLSearchParams({ csrf }), redirect: "manual" });
    return r.status;
  }, [deployJobUrl, csrf]);
  check(status === 403, `developer's approval is refused (HTTP ${status})`);
  await shot(page, "09-job-needs-approver");
});

// 4. A maintainer approves; the approval and the deployment are recorded.
await asUser("boss", "correct horse battery", async (page) => {
  await page.goto(`${URL_BASE}/dash/environments`);
  check((await page.textContent("main")).includes("deploy"), "the waiting deploy is listed on the environments page");
  await page.goto(deployJobUrl);
  await Promise.all([page.waitForURL(/\/dash\/jobs\/\d+$/), page.click("[data-testid=play]")]);
  await page.waitForSelector("[data-testid=approvals]");
  check((await page.textContent("[data-testid=approvals]")).includes("boss"), "the approval shows who approved");
  await page.waitForFunction(() => document.getElementById("log").dataset.done === "true", null, { timeout: 60000 });
  check((await page.textContent("#log")).includes("deploying production"), "the deploy ran");
  await shot(page, "10-job-approved");
  await page.goto(`${URL_BASE}/dash/environments`);
  check((await page.textContent("main")).includes("production"), "environment history");
  await shot(page, "11-environments");

  // The maintainer rolls the container target back with the button; the
  // history records the rollback and who ran it.
  if (ROLLBACK_TARGET) {
    const button = page.locator(`form:has(input[name=target][value="${ROLLBACK_TARGET}"]) [data-testid=rollback]`);
    check((await button.textContent()).trim() === "Roll back to r1", "the environments page offers a rollback to r1");
    await Promise.all([page.waitForURL(/\/dash\/environments$/), button.click()]);
    const row = page.locator(`[data-testid=revisions] tr:has-text("${ROLLBACK_TARGET}")`).first(); // newest first
    const cells = await row.locator("td").allTextContents();
    check(cells[2] === "rollback" && cells[3] === "r1" && cells[4] === "succeeded", `the history records the rollback to r1 (${cells.join(" | ")})`);
    check(cells[9] === "boss", "the rollback record names who ran it");
    const badge = await row.locator("td .badge").first().evaluate((b) => getComputedStyle(b).backgroundColor);
    check(badge !== "rgba(0, 0, 0, 0)" && badge !== "transparent", `the result badge has a colour (${badge})`);
    check(!(await page.isVisible(`form:has(input[name=target][value="${ROLLBACK_TARGET}"]) [data-testid=rollback]`)),
      "no rollback is offered once the known-good revision is live");
    await shot(page, "13-rollback");
  } else {
    console.log("skip: rollback in the browser (no container engine; see tests/browser.rs)");
  }
}, { width: 1280, height: 900 });

// 5. On a phone.
await asUser("dev", "correct horse battery", async (page) => {
  await page.goto(`${URL_BASE}/dash`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
  check(overflow, "the overview fits a phone's width");
  await shot(page, "12-overview-phone");
}, { width: 390, height: 844 });

console.log("browser: all checks passed");

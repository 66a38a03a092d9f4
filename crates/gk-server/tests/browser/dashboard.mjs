// The dashboard as a person looks at it, in German and in English: widget titles in the
// browser's language, each label apart from its value, a chart with dated and counted axes,
// colour and a value on hover. Leaves dashboard-de.png and dashboard-en.png in `shots`.
import assert from "node:assert/strict";

const LANGUAGES = {
  de: {
    header: "de-DE,de;q=0.9,en;q=0.5",
    titles: { stats_overview: "Ticketübersicht", stats_by_status: "Tickets nach Status", stats_chart: "Tickets pro Tag" },
    total: "Gesamt",
    date: /^\d{1,2}\. (Jan|Feb|Mär|Apr|Mai|Jun|Jul|Aug|Sep|Okt|Nov|Dez)$/,
    tooltip: /^\d{1,2}\. \S+: \d+ Tickets?$/,
    caption: "9 Tickets in den letzten 30 Tagen",
  },
  en: {
    header: "en-US,en;q=0.9",
    titles: { stats_overview: "Ticket overview", stats_by_status: "Tickets by state", stats_chart: "Tickets per day" },
    total: "Total",
    date: /^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2}$/,
    tooltip: /^\S+ \d{1,2}: \d+ tickets?$/,
    caption: "9 tickets in the last 30 days",
  },
};

/** Whether box `b` lies entirely right of or below box `a` (they do not run into each other). */
function apart(a, b) {
  return b.x >= a.x + a.width - 0.5 || b.y >= a.y + a.height - 0.5;
}

/** Whether box `inner` lies within box `outer`. */
function within(inner, outer) {
  return (
    inner.x >= outer.x - 0.5 &&
    inner.y >= outer.y - 0.5 &&
    inner.x + inner.width <= outer.x + outer.width + 0.5 &&
    inner.y + inner.height <= outer.y + outer.height + 0.5
  );
}

async function look(browser, { base, agent, shots, step }, language) {
  const expected = LANGUAGES[language];
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    extraHTTPHeaders: { authorization: `Bearer ${agent}`, "accept-language": expected.header },
  });
  try {
    const page = await context.newPage();
    const response = await page.goto(`${base}/dashboard`);
    assert.equal(response.status(), 200);

    // Titles: translated, never the raw key.
    for (const [id, title] of Object.entries(expected.titles)) {
      assert.equal((await page.textContent(`section[data-widget="${id}"] > h3`)).trim(), title, id);
    }
    assert.equal(await page.locator("section.gk-widget > h3", { hasText: /^stats\./ }).count(), 0);

    // The overview: four tiles, each label and its value in their own boxes.
    const overview = page.frameLocator('iframe[data-widget="stats_overview"]');
    const tiles = overview.locator("dl > div");
    await tiles.first().waitFor();
    assert.equal(await tiles.count(), 4);
    assert.equal((await tiles.first().locator("dt").textContent()).trim(), expected.total);
    assert.equal((await tiles.first().locator("dd").textContent()).trim(), "12");
    for (let i = 0; i < 4; i++) {
      const label = await tiles.nth(i).locator("dt").boundingBox();
      const value = await tiles.nth(i).locator("dd").boundingBox();
      assert.ok(apart(label, value), `tile ${i}: the value runs into its label`);
    }
    // Tickets by state: each state apart from its count.
    const states = page.frameLocator('iframe[data-widget="stats_by_status"]').locator("li");
    assert.ok((await states.count()) >= 3);
    for (let i = 0; i < (await states.count()); i++) {
      const label = await states.nth(i).locator("span").boundingBox();
      const value = await states.nth(i).locator("strong").boundingBox();
      assert.ok(value.x >= label.x + label.width + 8, `state ${i}: the count runs into its label`);
    }

    // The chart: inside its widget, dated and counted axes, coloured bars, a value on hover.
    const frame = page.locator('iframe[data-widget="stats_chart"]');
    const chart = page.frameLocator('iframe[data-widget="stats_chart"]');
    await chart.locator("svg.gk-chart").waitFor();
    const frameBox = await frame.boundingBox();
    const plotBox = await chart.locator("g.bars").boundingBox();
    assert.ok(within(plotBox, frameBox), `the plot overflows its widget: ${JSON.stringify({ plotBox, frameBox })}`);
    assert.ok(plotBox.width > frameBox.width * 0.5, "the plot uses the widget's width");
    assert.equal(await chart.locator("text.caption").textContent(), expected.caption);
    const dates = await chart.locator("g.x-axis text").allTextContents();
    assert.ok(dates.length >= 4, `date labels: ${dates}`);
    for (const date of dates) assert.match(date, expected.date);
    const counts = await chart.locator("g.y-axis text").allTextContents();
    assert.equal(counts[0], "0");
    assert.ok(counts.length >= 2 && counts.every((c) => /^\d+$/.test(c)), `count labels: ${counts}`);
    const bars = chart.locator("rect.bar");
    assert.equal(await bars.count(), 30, "one bar a day for 30 days");
    const tooltips = await chart.locator("g.day > title").allTextContents();
    for (const tooltip of tooltips) assert.match(tooltip, expected.tooltip);
    const colour = (i) => bars.nth(i).evaluate((bar) => getComputedStyle(bar).fill);
    assert.equal(await colour(29), "rgb(59, 130, 246)");
    await chart.locator("g.day").nth(29).locator("rect.hit").hover();
    assert.equal(await colour(29), "rgb(29, 78, 216)", "the hovered bar is highlighted");

    // A refreshable widget (hello-grpc's, every 5 s) is asked for again: its count grows.
    if (language === "en") {
      const hello = page.frameLocator('iframe[data-widget="hello_widget"]').locator("p.count");
      const before = (await hello.textContent()).trim();
      await page.waitForSelector('section[data-widget="hello_widget"][data-refreshed]', { timeout: 15000 });
      await page.frameLocator('iframe[data-widget="hello_widget"]').locator("p.count").waitFor();
      const after = (await page.frameLocator('iframe[data-widget="hello_widget"]').locator("p.count").textContent()).trim();
      assert.notEqual(after, before, "the refreshed widget shows the new count");
      step("a refreshable widget refreshes on the dashboard at its refresh_sec");
    }

    await page.mouse.move(0, 0);
    await page.screenshot({ path: `${shots}/dashboard-${language}.png`, fullPage: true });
    step(`the dashboard in ${language}: translated titles, labels apart from values, a chart with axes`);
  } finally {
    await context.close();
  }
}

/** Both looks at the dashboard; each reports one step. */
export async function dashboard(browser, options) {
  await look(browser, options, "de");
  await look(browser, options, "en");
}

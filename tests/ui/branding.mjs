// The login page and /docs under a team's own brand (ui.product_name,
// ui.logo_file, ui.accent_color), in both themes at both widths: the name
// and logo shown, the accent on the primary button, no serious or critical
// axe-core violation and no horizontal overflow.
//
//   node tests/ui/branding.mjs <base_url> <screenshot_dir> <product_name> <accent>
//
// Run by tests/api/ui.rs against an in-process Gatehouse configured so.

import fs from "node:fs";
import path from "node:path";
import { launch } from "./chromium.mjs";
import { axeViolations, NARROWEST, overflow, THEMES, WIDTHS } from "./a11y.mjs";

const [base, shotDir, product, accent] = process.argv.slice(2);
if (!base || !shotDir || !product || !accent) {
  console.error("usage: node branding.mjs <base_url> <screenshot_dir> <product_name> <accent>");
  process.exit(2);
}
fs.mkdirSync(shotDir, { recursive: true });

const problems = [];
const { context, close } = await launch({
  viewport: { width: 1280, height: 900 },
  onCspViolation: (text) => problems.push(text),
});
let exitCode = 0;
try {
  for (const extra of context.pages()) await extra.close();
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (err) => problems.push(`JavaScript error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  const rgb = (hex) => `rgb(${[1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(", ")})`;
  let views = 0;
  for (const theme of THEMES) {
    await page.emulateMedia({ colorScheme: theme });
    for (const size of [...WIDTHS, NARROWEST]) {
      await page.setViewportSize({ width: size.width, height: size.height });
      for (const [name, url] of [["login", "/login"], ["docs", "/docs"]]) {
        await page.goto(`${base}${url}`);
        await page.waitForLoadState("networkidle");
        await page.locator("#boot-status, #docs-status").waitFor({ state: "detached" });
        const label = `${name} at ${size.width} px, ${theme}`;
        const seen = await page.evaluate(() => ({
          title: document.title,
          brand: document.querySelector(".auth-brand span, .brand span")?.textContent,
          logo: [...document.querySelectorAll(".auth-brand img, .brand img")].map((img) => ({ src: img.getAttribute("src"), loaded: img.complete && img.naturalWidth > 0 })),
          button: (() => {
            const b = document.querySelector(".button-primary");
            return b ? getComputedStyle(b).backgroundColor : null;
          })(),
          link: getComputedStyle(document.querySelector("a[href]")).color,
        }));
        if (!seen.title.includes(product)) problems.push(`${label}: the title is "${seen.title}"`);
        if (seen.brand !== product) problems.push(`${label}: the brand reads "${seen.brand}"`);
        if (!seen.logo.length || !seen.logo.every((l) => l.src === "/branding/logo" && l.loaded)) problems.push(`${label}: the logo: ${JSON.stringify(seen.logo)}`);
        if (name === "login") {
          const wanted = theme === "light" ? rgb(accent) : null;
          if (wanted && seen.button !== wanted) problems.push(`${label}: the primary button is ${seen.button}, not the accent ${wanted}`);
          if (theme === "dark" && seen.button === rgb(accent)) problems.push(`${label}: the dark theme uses the light accent unchanged`);
        }
        for (const v of await axeViolations(page)) problems.push(`${label}: axe ${v.impact} ${v.id} (${v.help})\n      ${v.nodes.join("\n      ")}`);
        const wide = await overflow(page);
        if (wide) problems.push(`${label}: ${wide.document} px wide in a ${wide.viewport} px window: ${wide.culprits.join(", ")}`);
        if (size !== NARROWEST) await page.screenshot({ path: path.join(shotDir, `${name}-${size.width}-${theme}.png`), fullPage: name === "login" });
        views += 1;
      }
    }
  }
  if (problems.length) throw new Error(`problems:\n  ${problems.join("\n  ")}`);
  console.log(`branding: ${views} views show ${product} with its logo and accent, pass axe-core and fit their width`);
  console.log("branding: all steps passed");
} catch (err) {
  exitCode = 1;
  console.error(`branding: FAILED: ${err.message}`);
} finally {
  await close();
}
process.exit(exitCode);

// What every page must pass, in both themes and at every width: no
// serious or critical axe-core violation (axe-core is pinned in
// package.json), no horizontal overflow, and at narrow widths nothing out
// of reach (every section tab and the signed-in address on screen).

import fs from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const AXE_SOURCE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

export const WIDTHS = [
  { name: "desktop", width: 1280, height: 900 },
  { name: "phone", width: 390, height: 844 },
];
/** The narrowest screen every page must fit (checked, not photographed). */
export const NARROWEST = { name: "narrow", width: 360, height: 740 };
export const THEMES = ["light", "dark"];

/** axe-core's serious and critical violations on the page as it is now. */
export async function axeViolations(page) {
  // Evaluated over the DevTools protocol, which the page's CSP does not govern.
  const loaded = await page.evaluate(() => typeof window.axe === "object");
  if (!loaded) await page.evaluate(AXE_SOURCE);
  return page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.slice(0, 6).map((n) => `${n.target.join(" ")}: ${(n.failureSummary || "").replace(/\s+/g, " ")}`),
      }));
  });
}

/** Elements wider than the viewport (empty when nothing overflows). */
export async function overflow(page) {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const doc = Math.max(document.documentElement.scrollWidth, document.body.scrollWidth);
    if (doc <= width) return null;
    const culprits = [];
    for (const el of document.querySelectorAll("body *")) {
      const r = el.getBoundingClientRect();
      if (r.width && r.right > width + 0.5 && !el.closest("[hidden]")) {
        culprits.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ""}${el.className && typeof el.className === "string" ? `.${el.className.trim().split(/\s+/).join(".")}` : ""} (right edge ${Math.round(r.right)})`);
      }
      if (culprits.length >= 8) break;
    }
    return { viewport: width, document: doc, culprits };
  });
}

/** At a narrow width: every section tab and the signed-in address on screen. */
export async function outOfReach(page) {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const problems = [];
    const topbar = document.getElementById("topbar");
    if (!topbar || topbar.hidden) return problems;
    const seen = (el) => {
      const r = el.getBoundingClientRect();
      return r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= width + 0.5;
    };
    for (const a of topbar.querySelectorAll("nav a")) {
      if (!seen(a)) problems.push(`the "${a.textContent}" tab is not on screen`);
    }
    const email = document.getElementById("account-email");
    if (!seen(email)) problems.push("the signed-in address is not on screen");
    else if (email.scrollWidth > email.clientWidth + 1 && !email.title) problems.push("the signed-in address is cut off with no title");
    for (const id of ["logout", "project-select"]) {
      const el = document.getElementById(id);
      if (!seen(el)) problems.push(`#${id} is not on screen`);
    }
    return problems;
  });
}

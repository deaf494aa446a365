/* The SharedWorker (a module worker, `new SharedWorker(url, {type: "module"})`): holds the
 * browser's one stream owner for every tab of one user on one stream URL (transport.js).
 */
import { serveSharedWorker } from "./transport.js";

serveSharedWorker(self, {
  EventSource: self.EventSource,
  fetch: (...args) => self.fetch(...args),
  setTimeout: (fn, ms) => self.setTimeout(fn, ms),
  clearTimeout: (id) => self.clearTimeout(id),
  random: Math.random,
  baseUrl: self.location.href,
});

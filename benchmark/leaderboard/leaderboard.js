(function () {
  "use strict";
  function cellKey(cell) {
    var v = cell.getAttribute("data-sort");
    return v === null ? cell.textContent.trim() : v;
  }
  function compareKeys(a, b, numeric, dir) {
    var ea = a === "", eb = b === "";
    if (ea || eb) { return ea === eb ? 0 : (ea ? 1 : -1); }
    var r;
    if (numeric) { r = parseFloat(a) - parseFloat(b); } else { r = a < b ? -1 : (a > b ? 1 : 0); }
    return dir === "asc" ? r : -r;
  }
  function sortOrder(keys, numeric, dir) {
    var idx = keys.map(function (_, i) { return i; });
    idx.sort(function (i, j) { return compareKeys(keys[i], keys[j], numeric, dir) || (i - j); });
    return idx;
  }
  function cxrSortTable(table, col, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (x, y) {
      return Number(x.getAttribute("data-index")) - Number(y.getAttribute("data-index"));
    });
    var th = table.tHead.rows[0].cells[col];
    var numeric = th.getAttribute("data-type") === "number";
    var keys = rows.map(function (r) { return cellKey(r.cells[col]); });
    sortOrder(keys, numeric, dir).forEach(function (i) { body.appendChild(rows[i]); });
    var heads = table.tHead.rows[0].cells;
    for (var k = 0; k < heads.length; k++) { heads[k].setAttribute("aria-sort", "none"); }
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
  }
  function cxrInit(doc) {
    var tables = doc.querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r, i) { r.setAttribute("data-index", String(i)); });
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
        th.addEventListener("click", function () {
          var cur = th.getAttribute("aria-sort");
          var first = th.getAttribute("data-first") || "asc";
          var dir = cur === "ascending" ? "desc" : (cur === "descending" ? "asc" : first);
          cxrSortTable(table, col, dir);
        });
      });
    });
  }
  var api = { compareKeys: compareKeys, sortOrder: sortOrder, cxrSortTable: cxrSortTable, cxrInit: cxrInit };
  if (typeof module !== "undefined" && module.exports) { module.exports = api; }
  if (typeof document !== "undefined") { cxrInit(document); }
})();

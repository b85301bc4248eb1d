/* 公海 CRM: the little JavaScript the pages need. htmx does the rest. */
(function () {
  "use strict";

  function toast(message, level) {
    var box = document.getElementById("toasts");
    if (!box || !message) return;
    var el = document.createElement("div");
    el.className = "toast toast-" + (level || "info");
    el.setAttribute("role", level === "error" ? "alert" : "status");
    el.textContent = message;
    box.appendChild(el);
    setTimeout(function () { el.classList.add("leaving"); }, 4200);
    setTimeout(function () { el.remove(); }, 4800);
  }
  window.crmToast = toast;

  document.addEventListener("crm:toast", function (evt) {
    var d = evt.detail || {};
    toast(d.message || d.value, d.level);
  });

  // A failed htmx request shows a small error toast instead of nothing.
  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail.xhr;
    var msg = "";
    try {
      var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var node = doc.querySelector("[data-error-message]");
      msg = node ? node.getAttribute("data-error-message") : "";
    } catch (e) { /* not HTML */ }
    toast(msg || (document.body.dataset.errorText || "操作失败") + " (" + xhr.status + ")", "error");
  });
  document.addEventListener("htmx:sendError", function () {
    toast(document.body.dataset.offlineText || "网络连接失败,请检查网络后重试。", "error");
  });

  // Quick picks for datetime inputs: <button data-pick="1d|3d|mon" data-target="#id">
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function localValue(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }
  document.addEventListener("click", function (evt) {
    var pick = evt.target.closest("[data-pick]");
    if (pick) {
      evt.preventDefault();
      var input = document.querySelector(pick.dataset.target);
      if (!input) return;
      var d = new Date();
      var hour = parseInt(pick.dataset.hour || "10", 10);
      var kind = pick.dataset.pick;
      if (kind === "mon") { d.setDate(d.getDate() + ((8 - d.getDay()) % 7 || 7)); }
      else { d.setDate(d.getDate() + parseInt(kind, 10)); }
      d.setHours(hour, 0, 0, 0);
      input.value = localValue(d);
      input.dispatchEvent(new Event("change", { bubbles: true }));
      return;
    }
    var copy = evt.target.closest("[data-copy]");
    if (copy) {
      evt.preventDefault();
      var text = copy.dataset.copy;
      var done = function () { toast(copy.dataset.copied || "已复制", "success"); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
      } else { fallbackCopy(text); done(); }
      return;
    }
    var checkAll = evt.target.closest("[data-check-all]");
    if (checkAll) {
      var boxes = document.querySelectorAll(checkAll.dataset.checkAll);
      boxes.forEach(function (b) { b.checked = checkAll.checked; });
    }
  });
  function fallbackCopy(text) {
    var ta = document.createElement("textarea");
    ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "fixed"; ta.style.opacity = "0";
    document.body.appendChild(ta); ta.select();
    try { document.execCommand("copy"); } catch (e) { /* ignore */ }
    ta.remove();
  }

  // Close <details class="menu"> when clicking elsewhere.
  document.addEventListener("click", function (evt) {
    document.querySelectorAll("details.menu[open]").forEach(function (d) {
      if (!d.contains(evt.target)) d.removeAttribute("open");
    });
  });
})();

/* Follow-up sheet over the inbox (crm/followups): close on its ✕ button or Escape. */
(function () {
  "use strict";
  function closeSheet() {
    var sheet = document.getElementById("sheet");
    if (sheet) sheet.innerHTML = "";
  }
  document.addEventListener("click", function (evt) {
    if (evt.target.closest("[data-close-sheet]")) { evt.preventDefault(); closeSheet(); return; }
    if (evt.target.id === "sheet") closeSheet();  // a tap on the dimmed backdrop
  });
  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape") closeSheet();
  });
})();

// Keyboard stepping for a page's own buttons: `data.keys` maps a key ("ArrowRight") to a button's Streamlit key
// ("demo_next"); a press clicks that button. Keys typed into a field, a slider or a list are left alone. The
// listener lives on the app's document while the component is mounted and is removed when it unmounts.
export default function (component) {
  const { data, parentElement } = component;
  const doc = parentElement.ownerDocument;
  const keys = (data && data.keys) || {};
  const handler = (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
    const t = e.target;
    if (t && t.closest && t.closest("input, textarea, select, [role=slider], [role=listbox], [role=option], [contenteditable=true]")) return;
    const key = keys[e.key];
    const button = key && doc.querySelector(".st-key-" + key + " button");
    if (!button || button.disabled) return;
    e.preventDefault();
    e.stopPropagation();
    button.click();
  };
  if (parentElement.__vaeKeys) doc.removeEventListener("keydown", parentElement.__vaeKeys, true);
  parentElement.__vaeKeys = handler;
  doc.addEventListener("keydown", handler, true);
  return () => {
    doc.removeEventListener("keydown", handler, true);
    delete parentElement.__vaeKeys;
  };
}

// A confirmation in the page's own dialog (focus stays in it; Escape or "Keep it" says no).

export function confirmAction(title, text, yesLabel) {
  const dialog = document.getElementById('confirm-dialog');
  const form = document.getElementById('confirm-form');
  const no = document.getElementById('confirm-no');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-yes').textContent = yesLabel;
  return new Promise((resolve) => {
    const done = (answer) => {
      form.removeEventListener('submit', yes);
      no.removeEventListener('click', keep);
      dialog.removeEventListener('close', closed);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const yes = (e) => {
      e.preventDefault();
      done(true);
    };
    const keep = () => done(false);
    const closed = () => done(false);
    form.addEventListener('submit', yes);
    no.addEventListener('click', keep);
    dialog.addEventListener('close', closed);
    dialog.showModal();
    no.focus();
  });
}

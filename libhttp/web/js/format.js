// Times, durations and short ids as people read them.

export function shortId(id) {
  return id ? id.slice(-8) : '';
}

/** A time from the API (RFC 3339), or from an engine record inside an event (microseconds since 1970). */
export function parseTime(value) {
  if (value === null || value === undefined || value === '') return null;
  return typeof value === 'number' ? new Date(value / 1000) : new Date(value);
}

/** Microseconds since 1970 of an RFC 3339 time, keeping the digits a Date drops (steps take microseconds). */
export function micros(text) {
  if (!text) return null;
  const m = /\.(\d+)/.exec(text);
  const whole = Date.parse(text.replace(/\.\d+/, ''));
  if (Number.isNaN(whole)) return null;
  return whole * 1000 + (m ? Number(m[1].padEnd(6, '0').slice(0, 6)) : 0);
}

/** 850 ms, 4.2 s, 3 min 12 s, 2 h 5 min, 3 d 4 h */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '';
  if (ms < 0) ms = 0;
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : ms.toFixed(0)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** "3 s ago", "in 5 min" */
export function relative(date, now = Date.now()) {
  if (!date) return '';
  const ms = date.getTime() - now;
  const text = duration(Math.abs(ms));
  if (Math.abs(ms) < 1000) return 'just now';
  return ms < 0 ? `${text} ago` : `in ${text}`;
}

/** A countdown to `date`: "4 min 10 s left", or "expired". */
export function countdown(date, now = Date.now()) {
  if (!date) return 'never expires';
  const ms = date.getTime() - now;
  return ms <= 0 ? 'expired' : `${duration(Math.floor(ms / 1000) * 1000)} left`;
}

export function absolute(date) {
  if (!date) return '';
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
         `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.` +
         `${pad(date.getMilliseconds(), 3)}`;
}

/** What a waiting or sleeping run waits for, from its `waiting_for`. */
export function waitingText(w) {
  if (!w || typeof w !== 'object') return '';
  const until = w.until ? ` until ${absolute(parseTime(w.until))}` : '';
  switch (w.kind) {
    case 'sleep': return `sleeping${until}`;
    case 'hook': return `hook “${w.hook ?? w.name}”${until}`;
    case 'event': return `event “${w.event ?? w.name}”${until}`;
    case 'child': return `child run ${shortId(w.child)}`;
    case 'any': return `the first of ${(w.arms ?? []).length} waits${until}`;
    case 'all': return `all of ${(w.arms ?? []).length} waits${until}`;
    default: return w.kind ?? '';
  }
}

export const finished = new Set(['completed', 'failed', 'cancelled']);

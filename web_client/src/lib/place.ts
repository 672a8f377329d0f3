// Where a ticket is queued and who handles it, from GET /org (docs/api.md, "Where a case is handled").

export interface OrgUnit { id: number; code: string; name_zh: string; name_en: string }
export interface OrgDepartment { id: number; unit_id: number; name_zh: string; name_en: string }
export interface OrgWindow { id: number; name_zh: string; name_en: string; clerk_user_id: number | null; clerk_name: string | null }
export interface Org { units: OrgUnit[]; departments: OrgDepartment[]; windows: OrgWindow[] }

export interface Place {
  department: string
  centre: string
  /** The window that called the ticket, and its clerk, once called. */
  window: string | null
  clerk: string | null
}

/** The department, centre (and window and clerk, once called) of a ticket, named in the interface language. */
export function placeOf(org: Org, ticket: { department_id: number; window_id: number | null; clerk_user_id?: number | null }, lang: string): Place | null {
  const name = (x: { name_zh: string; name_en: string }) => (lang === 'en' ? x.name_en : x.name_zh)
  const department = org.departments.find((d) => d.id === ticket.department_id)
  const centre = department && org.units.find((u) => u.id === department.unit_id)
  if (!department || !centre) return null
  const window = ticket.window_id !== null ? org.windows.find((w) => w.id === ticket.window_id) : undefined
  const clerk = window && ticket.clerk_user_id != null && window.clerk_user_id === ticket.clerk_user_id ? window.clerk_name : null
  return { department: name(department), centre: name(centre), window: window ? name(window) : null, clerk }
}

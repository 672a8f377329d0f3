import { createRouter, createWebHashHistory } from 'vue-router'
import { token } from './lib/api'
import { homeOf, loadMe, session } from './session'

export const router = createRouter({
  history: createWebHashHistory(),
  routes: [
    { path: '/', component: { render: () => null } }, // sent on by the guard to the user's home screen
    { path: '/login', component: () => import('./views/LoginView.vue') },
    // An invite link (expert, outside party, on-site inspector): no account, the token in the query.
    { path: '/join/:sessionId', component: () => import('./views/JoinView.vue'), props: (r) => ({ sessionId: Number(r.params.sessionId), token: String(r.query.token ?? '') }) },
    { path: '/cases', component: () => import('./views/CasesView.vue') },
    { path: '/cases/:id', component: () => import('./views/CaseView.vue'), props: (r) => ({ id: Number(r.params.id) }) },
    { path: '/window', component: () => import('./views/WindowView.vue') },
    {
      path: '/call/:sessionId',
      component: () => import('./views/CallView.vue'),
      props: (r) => ({ sessionId: Number(r.params.sessionId), caseId: Number(r.query.case), ticketId: Number(r.query.ticket) || null }),
    },
    // The on-site inspector's phone: rear camera, position, evidence photos (after redeeming an inspector invite).
    {
      path: '/inspect/:sessionId',
      component: () => import('./views/InspectView.vue'),
      props: (r) => ({ sessionId: Number(r.params.sessionId), caseId: Number(r.query.case) }),
    },
    { path: '/dashboard', component: () => import('./views/DashboardView.vue') },
    { path: '/:rest(.*)*', redirect: '/' },
  ],
})

router.beforeEach(async (to) => {
  if (to.path === '/login' || to.path.startsWith('/join/')) return true
  if (!token()) return '/login'
  if (!session.me) {
    try {
      await loadMe()
    } catch {
      return '/login'
    }
  }
  if (to.path === '/' || to.matched.length === 0) return homeOf(session.me!.role)
  return true
})

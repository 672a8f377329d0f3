// English. Must have exactly the keys of zh-CN.ts (checked by src/locales/catalogue.spec.ts).
import type zh from './zh-CN'
import field from './field.en'

const en: typeof zh = {
  ...field,
  app: { title: 'CloudWindow', subtitle: 'Remote assistance · Remote inspection', language: 'Language', logout: 'Log out', nav: 'Navigation' },
  nav: { cases: 'Cases', window: 'My window', dashboard: 'Dashboard' },
  login: { title: 'Log in', username: 'Username', password: 'Password', submit: 'Log in', failed: 'Login failed: {msg}', required: 'Enter your username and password' },
  common: { refresh: 'Refresh', back: 'Back', cancel: 'Cancel', confirm: 'OK', empty: 'Nothing here yet', loading: 'Loading…', error: 'Something went wrong: {msg}' },
  roles: { community_staff: 'Service point staff', clerk: 'Cloud window clerk', supervisor: 'Supervisor', admin: 'Administrator', expert: 'Expert', inspector: 'Inspector', guest: 'Guest' },
  states: { draft: 'Draft', submitted: 'Submitted', in_session: 'In session', accepted: 'Accepted', rejected: 'Returned', completed: 'Completed', cancelled: 'Cancelled' },
  ticketStates: { waiting: 'Waiting', called: 'Calling', serving: 'Being served', done: 'Done', no_show: 'No-show', transferred: 'Transferred', cancelled: 'Cancelled' },
  windowStates: { open: 'Open', paused: 'Paused', closed: 'Closed' },
  alertKinds: { wait_timeout: 'Wait timeout', status: 'Queue warning' },
  recordingKinds: { participant: 'Participant', screen: 'Screen share', composite: 'Composite' },
  cases: {
    title: 'Cases', new: 'New case', search: 'Search applicant, matter or number', matter: 'Matter', applicant: 'Applicant', idNumber: 'ID number', phone: 'Phone',
    proxy: 'By proxy', proxyName: 'Proxy', state: 'State', number: 'Case number', open: 'Open', created: 'Case created', empty: 'No cases yet: click "New case" to start',
    noMatch: 'No case matches', pickMatter: 'Choose a matter', missingFields: 'Choose a matter and enter the applicant and ID number', rejectedReason: 'Returned: {reason}',
  },
  materials: {
    title: 'Materials', required: 'Required', optional: 'Optional', satisfied: 'Complete', missing: 'Missing', drop: 'Drop a file here or click to upload',
    uploading: 'Uploading {p}%', uploaded: 'Uploaded: {name}', tooLarge: 'File too large (at most {mb} MB)', badType: 'Wrong file type; accepted: {types}',
    snapshot: 'Take a photo', takePhoto: 'Capture', preview: 'Preview', documents: 'Uploaded materials', submit: 'Submit materials', submitted: 'Materials submitted',
    noCamera: 'Cannot open the camera: {msg}', incomplete: 'Some required materials are still missing',
  },
  queue: {
    take: 'Take a ticket', taken: 'Ticket taken: {number}', waiting: 'Waiting', position: '{n} ahead of you', estimate: 'About {min} min', ringing: 'A cloud window is calling you!',
    answer: 'Answer', state: 'Ticket state', windows: 'Cloud windows', signIn: 'Sign in to window', signedIn: 'Signed in: {name}', callNext: 'Call next', recall: 'Recall', skip: 'Skip',
    transfer: 'Transfer', nobody: 'Nobody is waiting', line: 'Queue', called: 'Called {number}', complete: 'Complete', colour: 'Status', green: 'Normal', yellow: 'Yellow warning', red: 'Red warning',
    recalled: 'Recalled {number}', skipped: '{number} skipped', completed: '{number} done', transferred: '{number} transferred', unanswered: 'Nobody answered {number}; it is back at the head of the line',
    gaveUp: '{number} went unanswered too often and is a no-show', tidalClosed: 'Your tidal window has closed at the end of its period', noWindows: 'Your department has no cloud windows yet', tidal: 'Tidal window', pause: 'Pause calling',
    resume: 'Resume calling', signOut: 'Sign out of window', current: 'Current ticket', toCall: 'Go to the call', number: 'Ticket', place: 'Place', estimateCol: 'Estimated wait',
    figures: '{n} waiting · longest {min} min', toDepartment: 'To department', cancel: 'Leave the queue', cancelled: 'You left the queue', missed: 'Call missed: the ticket is back at the head of the line, watch for the next call',
  },
  call: {
    title: 'Video session', join: 'Join', leave: 'Leave', mic: 'Microphone', camera: 'Camera', micOff: 'Mute', cameraOff: 'Camera off', share: 'Share screen', stopShare: 'Stop sharing',
    chat: 'Chat', send: 'Send', chatPlaceholder: 'Type a message', recording: 'Recording', reconnecting: 'Connection lost, reconnecting…', quality: 'Connection',
    good: 'Good', fair: 'Fair', poor: 'Poor', unknown: 'Unknown', you: 'You', screen: 'Screen', ended: 'The session has ended', waitingOthers: 'Waiting for the other side…',
    accept: 'Accept', reject: 'Return', reason: 'Reason', complete: 'Complete', devices: 'Devices', participants: '{n} in the call', noDevices: 'No camera or microphone available: you can watch and listen only',
    chatFailed: 'Message not sent: {msg}',
    end_refused: 'The host did not let you in', end_removed: 'The host removed you from the session', inWaitingRoom: 'Waiting for the host to let you in…', waitingList: 'Waiting to join ({n})',
    admit: 'Admit', refuse: 'Refuse', mutedByHost: 'Muted', unmute: 'Unmute', muteOther: 'Mute', remove: 'Remove',
  },
  casefile: {
    title: 'Case file', audit: 'History', recordings: 'Recordings', play: 'Play', noRecordings: 'No recordings yet', verified: 'History chain verified', broken: 'History chain broken',
    duration: '{s} s', noAudit: 'No history yet',
  },
  audit: {
    case_created: 'Case opened', case_updated: 'Applicant data changed', case_transition: 'State changed', case_rerouted: 'Case rerouted', case_legal_hold: 'Legal hold changed',
    document_uploaded: 'Material uploaded', document_deleted: 'Material removed', session_opened: 'Video session opened', session_ended: 'Video session ended', session_joined: 'Joined the session',
    session_left: 'Left the session', chat_message: 'Chat message', recording_started: 'Recording started', recording_stopped: 'Recording stopped', recording_saved: 'Recording saved',
    recording_job_done: 'Recordings processed', recording_purged: 'Recording deleted (retention)', ticket_taken: 'Ticket taken', ticket_called: 'Ticket called', ticket_answered: 'Call answered',
    ticket_recalled: 'Ticket recalled', ticket_skipped: 'Ticket skipped', ticket_completed: 'Ticket done', ticket_cancelled: 'Ticket cancelled', ticket_transferred: 'Ticket transferred', ticket_unanswered: 'Call unanswered',
    invite_created: 'Invite sent', invite_redeemed: 'Joined by invite', invite_revoked: 'Invite revoked', appointment_booked: 'Appointment booked', appointment_cancelled: 'Appointment cancelled',
    appointment_checked_in: 'Checked in', appointment_no_show: 'Appointment missed',
  },
  sessionKinds: { call: 'Call', consultation: 'Consultation', inspection: 'Site inspection' },
  availability: { available: 'Available', busy: 'Busy', unavailable: 'Unavailable' },
  consult: {
    title: 'Consultation and inspection', open: 'Start a consultation', inspect: 'Start a site inspection', sessionOpen: '{kind} session open', invite: 'Invite',
    searchExperts: 'Find experts by name, organisation or field', search: 'Search', inviteExpert: 'Invite', guestName: 'Name of an outside party (e.g. enterprise)', inviteGuest: 'Invite outside party',
    inviteInspector: 'Invite the on-site inspector', linkFor: 'One-time link for {name} (copied)', link: 'Invite link', expires: 'valid until {at}', revoke: 'Revoke',
    copied: 'Invite link copied', notes: 'Consultation notes', noNotes: 'No notes yet', note: 'Note', conclusion: 'Conclusion', notePlaceholder: 'Write a note or the conclusion',
    addNote: 'Add note', addConclusion: 'Record conclusion',
  },
  inspection: {
    title: 'Remote site inspection', requested: 'Photo requested from the site', completed: 'Inspection completed', saved: 'Saved: {item}', reportMade: 'Inspection report made and filed in the case',
    location: 'On site at {lat}, {lon} (±{acc} m)', noLocation: 'No position from the site yet', state_open: 'In progress', state_completed: 'Completed',
    request: 'Request a photo', requestFor: 'Photo for this item', pass: 'Pass', fail: 'Fail', note: 'Note', notePlaceholder: 'Remarks', attach: 'Attach photos',
    photo: 'Photo {n}', save: 'Save', evidence: 'Site photos', noEvidence: 'No site photos yet', verify: 'Verify', valid: 'Not tampered with', invalid: 'Verification failed: possibly tampered with',
    complete: 'Complete inspection', report: 'Make inspection report',
  },
  supervisor: {
    title: 'Dashboard', alerts: 'Wait alerts', ack: 'Acknowledge', acked: 'Acknowledged', noAlerts: 'No alerts', tidal: 'Open tidal window', until: 'Open until', opened: 'Tidal window opened',
    noDepartments: 'No departments under your supervision', today: 'Today: {y} yellow, {r} red warnings, {w} wait timeouts', waitTimeout: '{number} has waited {min} min',
    statusAlert: 'Queue status turned {colour}',
  },
  chat: { title: 'Chat transcript', empty: 'No messages', session: 'Session {id}', refresh: 'Refresh' },
  place: { centre: 'Handled at', default: ' (default)', pickMatterFirst: 'Choose a matter first', queuedAt: 'Queued at: {centre} · {department}', calledAt: 'Called by window: {window}', calledBy: 'Called by window: {window} · {clerk}' },
}
export default en

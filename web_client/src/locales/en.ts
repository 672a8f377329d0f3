import type zh from './zh-CN'

const en: typeof zh = {
  app: { title: 'CloudWindow', subtitle: 'Remote assistance · Remote inspection', language: 'Language', logout: 'Log out' },
  login: { title: 'Log in', username: 'Username', password: 'Password', submit: 'Log in', failed: 'Login failed: {msg}' },
  common: { refresh: 'Refresh', back: 'Back', cancel: 'Cancel', confirm: 'OK', empty: 'Nothing here yet', loading: 'Loading…', error: 'Something went wrong: {msg}' },
  roles: { community_staff: 'Service point staff', clerk: 'Cloud window clerk', supervisor: 'Supervisor', admin: 'Administrator', expert: 'Expert', inspector: 'Inspector', guest: 'Guest' },
  states: { draft: 'Draft', submitted: 'Submitted', in_session: 'In session', accepted: 'Accepted', rejected: 'Returned', completed: 'Completed', cancelled: 'Cancelled' },
  cases: {
    title: 'Cases', new: 'New case', search: 'Search applicant or matter', matter: 'Matter', applicant: 'Applicant', idNumber: 'ID number', phone: 'Phone',
    proxy: 'By proxy', proxyName: 'Proxy', state: 'State', number: 'Case number', open: 'Open', created: 'Case created', empty: 'No cases yet: click "New case" to start',
    pickMatter: 'Choose a matter',
  },
  materials: {
    title: 'Materials', required: 'Required', optional: 'Optional', satisfied: 'Complete', missing: 'Missing', drop: 'Drop a file here or click to upload',
    uploading: 'Uploading {p}%', uploaded: 'Uploaded: {name}', tooLarge: 'File too large (at most {mb} MB)', badType: 'Wrong file type; accepted: {types}',
    snapshot: 'Take a photo', takePhoto: 'Capture', preview: 'Preview', documents: 'Uploaded materials', submit: 'Submit materials', submitted: 'Materials submitted',
  },
  queue: {
    take: 'Take a ticket', taken: 'Ticket taken: {number}', waiting: 'Waiting', position: '{n} ahead of you', estimate: 'About {min} min', ringing: 'A cloud window is calling you!',
    answer: 'Answer', state: 'Ticket state', windows: 'Cloud windows', signIn: 'Sign in to window', signedIn: 'Signed in: {name}', callNext: 'Call next', recall: 'Recall', skip: 'Skip',
    transfer: 'Transfer', nobody: 'Nobody is waiting', line: 'Queue', called: 'Called {number}', complete: 'Complete', colour: 'Status', green: 'Normal', yellow: 'Yellow warning', red: 'Red warning',
  },
  call: {
    title: 'Video session', join: 'Join', leave: 'Leave', mic: 'Microphone', camera: 'Camera', micOff: 'Mute', cameraOff: 'Camera off', share: 'Share screen', stopShare: 'Stop sharing',
    chat: 'Chat', send: 'Send', chatPlaceholder: 'Type a message', recording: 'Recording', reconnecting: 'Connection lost, reconnecting…', quality: 'Connection',
    good: 'Good', fair: 'Fair', poor: 'Poor', unknown: 'Unknown', you: 'You', screen: 'Screen', ended: 'The session has ended', waitingOthers: 'Waiting for the other side…',
    accept: 'Accept', reject: 'Return', reason: 'Reason', complete: 'Complete', devices: 'Devices',
  },
  casefile: { title: 'Case file', audit: 'History', recordings: 'Recordings', play: 'Play', noRecordings: 'No recordings yet', verified: 'History chain verified', broken: 'History chain broken' },
  supervisor: { title: 'Dashboard', alerts: 'Wait alerts', ack: 'Acknowledge', acked: 'Acknowledged', noAlerts: 'No alerts', tidal: 'Open tidal window', until: 'Open until', opened: 'Tidal window opened' },
}
export default en

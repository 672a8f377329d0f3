export default {
  app: { title: '云窗口', subtitle: '远程帮办 · 远程踏勘', language: '语言', logout: '退出登录' },
  login: { title: '登录', username: '用户名', password: '密码', submit: '登录', failed: '登录失败：{msg}' },
  common: { refresh: '刷新', back: '返回', cancel: '取消', confirm: '确定', empty: '暂无数据', loading: '加载中…', error: '出错了：{msg}' },
  roles: { community_staff: '村（社区）代办员', clerk: '云窗口人员', supervisor: '中心负责人', admin: '管理员', expert: '专家', inspector: '踏勘人员', guest: '访客' },
  states: { draft: '草稿', submitted: '已提交', in_session: '办理中', accepted: '已受理', rejected: '已退回', completed: '已办结', cancelled: '已撤销' },
  cases: {
    title: '办件列表', new: '新建办件', search: '搜索申请人或事项', matter: '事项', applicant: '申请人', idNumber: '身份证号', phone: '联系电话',
    proxy: '代办', proxyName: '代办人', state: '状态', number: '办件编号', open: '打开', created: '办件已创建', empty: '还没有办件，点击“新建办件”开始',
    pickMatter: '请选择事项',
  },
  materials: {
    title: '材料清单', required: '必交', optional: '可选', satisfied: '已齐', missing: '待上传', drop: '将文件拖到此处，或点击上传',
    uploading: '上传中 {p}%', uploaded: '已上传：{name}', tooLarge: '文件太大（不超过 {mb} MB）', badType: '文件类型不符，仅接受：{types}',
    snapshot: '拍照上传', takePhoto: '拍照', preview: '预览', documents: '已上传材料', submit: '提交材料', submitted: '材料已提交',
  },
  queue: {
    take: '取号', taken: '已取号：{number}', waiting: '排队中', position: '前面还有 {n} 位', estimate: '预计等待 {min} 分钟', ringing: '云窗口呼叫您！',
    answer: '接听', state: '号码状态', windows: '云窗口', signIn: '登录窗口', signedIn: '已登录窗口：{name}', callNext: '叫下一号', recall: '重呼', skip: '过号',
    transfer: '转办', nobody: '当前无人排队', line: '排队队列', called: '已呼叫 {number}', complete: '办结', colour: '状态', green: '正常', yellow: '黄色预警', red: '红色预警',
  },
  call: {
    title: '视频办理', join: '进入通话', leave: '离开', mic: '麦克风', camera: '摄像头', micOff: '静音', cameraOff: '关闭摄像头', share: '共享屏幕', stopShare: '停止共享',
    chat: '消息', send: '发送', chatPlaceholder: '输入消息', recording: '录制中', reconnecting: '网络中断，正在重新连接…', quality: '连接质量',
    good: '良好', fair: '一般', poor: '较差', unknown: '未知', you: '我', screen: '屏幕', ended: '通话已结束', waitingOthers: '等待对方加入…',
    accept: '受理', reject: '退回', reason: '退回原因', complete: '办结', devices: '设备',
  },
  casefile: { title: '办件档案', audit: '办理记录', recordings: '录像', play: '播放', noRecordings: '暂无录像', verified: '记录链校验通过', broken: '记录链校验失败' },
  supervisor: { title: '监控大屏', alerts: '超时预警', ack: '确认', acked: '已确认', noAlerts: '暂无预警', tidal: '开潮汐窗口', until: '开放至', opened: '潮汐窗口已开放' },
}

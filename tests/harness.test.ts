import { createTestDatabase } from './support/database.js';

test('test database accepts connections', async () => {
  const database = await createTestDatabase();
  const client = await database.connect();
  try {
    const { rows } = await client.query<{ db: string }>('SELECT current_database() AS db');
    expect(rows[0].db).toBe(database.name);
  } finally {
    await client.end();
    await database.drop();
  }
});

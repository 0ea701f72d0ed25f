COPY pg_temp.insights_privacy_import (position, key_hex) FROM STDIN;
